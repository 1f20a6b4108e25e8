"""The seam between itercode and the code it runs.

Every backend implements `Executor`: a batch of `Job`s in, one `Verdict` per
job out, in the same order. `sandbox` imports nothing from the rest of
itercode; it runs programs and knows nothing of models.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Protocol, Sequence

# Verdict statuses. `infra_error` means the host failed, not the program
# (no worker, no daemon, no image, a dirty slot before the run): evaluation
# retries it and training masks it; it is never a silent failure. Whatever a
# run can provoke (its judge crashing, a clean-up that fails after it) is that
# run's `error`, with `provoked` set (see `confirmed_provoked`).
PASSED = "passed"
FAILED = "failed"
ERROR = "error"
TIMEOUT = "timeout"
OOM = "oom"
INFRA_ERROR = "infra_error"
STATUSES = (PASSED, FAILED, ERROR, TIMEOUT, OOM, INFRA_ERROR)


@dataclass(frozen=True)
class Limits:
    """Resource limits for one run (one job)."""

    # Wall clock for the whole run. The one default: eval, the loop, the server and
    # their CLI options and configs read it here, so the same program run by any of
    # them has the same verdict-cache key and runs once.
    timeout_s: float = 5.0
    memory_mb: int = 1024  # address space of the candidate (and its children)
    max_processes: int = 64
    max_file_mb: int = 64
    max_open_files: int = 256
    max_output_kb: int = 64  # stdout/stderr kept; the rest is discarded

    def key(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(asdict(self).items()))


@dataclass(frozen=True)
class Job:
    """One candidate program and the tests that judge it.

    ``trusted_prefix`` is the problem's own code (e.g. HumanEval's prompt with
    its helper functions); the test side loads it from here, never from the
    candidate, so the candidate cannot redefine what the tests rely on.
    """

    job_id: str
    program: str
    tests: str
    entry_point: str
    trusted_prefix: str = ""


@dataclass
class Verdict:
    job_id: str
    status: str
    tests_passed: int = 0
    tests_total: int = 0
    duration_s: float = 0.0
    stderr: str = ""
    # An error the sandbox attributes to the run: the sandbox broke after the
    # run started (judge or server crash, failed clean-up), and broke again
    # when the job ran once more on a fresh worker.
    provoked: bool = False

    @property
    def passed(self) -> bool:
        return self.status == PASSED


ProgressFn = Callable[[Verdict], None]


def confirmed_provoked(job_id: str, reason: str, duration_s: float = 0.0) -> Verdict:
    """The verdict of a job that broke the sandbox twice, on two fresh workers:
    the run's own ``error``, never an ``infra_error`` that training would mask."""
    return Verdict(job_id, ERROR, duration_s=duration_s, provoked=True,
                   stderr=f"{reason}\n(the same happened again on a fresh worker: counted as the run's own error)")


class Executor(Protocol):
    """A sandbox backend. ``version`` goes into the verdict cache key."""

    name: str
    version: str

    def run(self, jobs: Sequence[Job], limits: Limits, on_verdict: ProgressFn | None = None) -> list[Verdict]:
        """Run every job; call ``on_verdict`` as each finishes (any order)."""
        ...

    def close(self) -> None: ...
