"""Where training runs: the CPU here, a CUDA GPU in bf16 where there is one.

One place decides, so the starter, the reranker and the policy trainers agree.
"""
from __future__ import annotations

import contextlib
import os


def cuda_available() -> bool:
    """True when torch sees a CUDA device and ITERCODE_DEVICE does not force the CPU."""
    if os.environ.get("ITERCODE_DEVICE", "").lower() == "cpu":
        return False
    import torch  # heavy: asked only where training or a model runs

    return torch.cuda.is_available()


def trainer_precision() -> dict:
    """Keyword arguments for a transformers/TRL TrainingArguments: bf16 on a capable GPU, fp32 on the CPU.

    >>> sorted(trainer_precision())  # doctest: +SKIP
    ['bf16', 'fp16', 'use_cpu']
    """
    if cuda_available():
        import torch  # heavy: asked only where training or a model runs

        return {"use_cpu": False, "bf16": torch.cuda.is_bf16_supported(), "fp16": False}
    return {"use_cpu": True, "bf16": False, "fp16": False}


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` torch CPU threads (None or 0: torch's own choice), then restore.

    Small models train fastest on one or two threads here: more OpenMP threads
    spinning on shared cores made steps many times slower.
    """
    import torch  # heavy: asked only where training or a model runs

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)
