"""Where training runs: the CPU here, a CUDA GPU in bf16 where there is one.

One place decides, so the starter, the reranker and the policy trainers agree.
"""
from __future__ import annotations

import contextlib
import math
import os
import time


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


def idle_cores(window: float = 0.3) -> float:
    """How many CPU cores sat idle over the next ``window`` seconds (from /proc/stat; Linux).

    Where /proc/stat cannot be read, 1.0: the caller then runs as if the cores were shared.
    """
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all jiffies; idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(window)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 1.0
    if total1 <= total0:
        return 1.0
    return (os.cpu_count() or 1) * (idle1 - idle0) / (total1 - total0)


def training_threads(threads: int | str | None) -> int | None:
    """A thread setting as `torch_threads` takes it; ``"auto"``: one per core idle right now.

    "auto" is for a job that runs alone (the demo's starter): more threads give
    the model faster when the cores are free (not bit-identical to one thread's:
    see codegen.starter.build_starter), and many times slower
    when another process wants them, so a busy machine gets one.
    """
    if threads != "auto":
        return threads
    return max(1, math.floor(idle_cores() + 0.1))
