"""Slots pinned to CPUs of their own (sandbox/cpus.py): the claim rule, and that
a run really executes on its slot's CPU, on the process and the Docker backend."""
from __future__ import annotations

import os

import pytest
from conftest import require_docker

from sandbox import make_executor
from sandbox.base import FAILED, PASSED, Job, Limits
from sandbox.cpus import CpuClaim

ALLOWED = sorted(os.sched_getaffinity(0))

AFFINITY_PROGRAM = "import os\ndef cpus():\n    return sorted(os.sched_getaffinity(0))\n"


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    """Claims in a directory of the test's own, so executors other tests keep open do not count."""
    monkeypatch.setattr("sandbox.cpus.LOCK_DIR", str(tmp_path))
    return tmp_path


def test_claims_give_each_slot_a_free_cpu_and_never_one_another_holds(lock_dir):
    first = CpuClaim(1)
    assert first.cpus == [ALLOWED[0]]
    second = CpuClaim(len(ALLOWED))  # wants every CPU, one is taken: pins none
    assert second.cpus == [None] * len(ALLOWED)
    rest = CpuClaim(len(ALLOWED) - 1)
    assert rest.cpus == (ALLOWED[1:] or [])
    assert set(rest.cpus).isdisjoint(first.cpus)
    first.release()
    rest.release()
    assert CpuClaim(len(ALLOWED)).cpus == ALLOWED  # released claims are free again


def test_more_slots_than_cpus_are_not_pinned_unless_asked(lock_dir):
    assert CpuClaim(len(ALLOWED) + 1).cpus == [None] * (len(ALLOWED) + 1)
    forced = CpuClaim(len(ALLOWED) + 1, pin=True).cpus
    assert forced == [ALLOWED[i % len(ALLOWED)] for i in range(len(ALLOWED) + 1)]
    assert CpuClaim(1, pin=False).cpus == [None]


def test_a_claim_dies_with_its_holder(lock_dir):
    claim = CpuClaim(len(ALLOWED))
    assert claim.cpus == ALLOWED
    del claim  # collected: its lock files close
    assert CpuClaim(len(ALLOWED)).cpus == ALLOWED


def runs_on(executor, cpus: list[int]) -> bool:
    """Whether a run's program may run on exactly ``cpus`` (it answers from inside the run)."""
    job = Job("affinity", AFFINITY_PROGRAM, f"assert cpus() == {cpus!r}\n", "cpus")
    verdict = executor.run([job], Limits(timeout_s=10))[0]
    assert verdict.status in (PASSED, FAILED), verdict.stderr
    return verdict.status == PASSED


@pytest.mark.parametrize("backend", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_a_run_executes_on_its_slots_cpu(backend, lock_dir):
    if backend == "docker":
        require_docker()
    with make_executor(backend, workers=1) as pinned:
        assert pinned.slot_cpus == [ALLOWED[0]]
        assert runs_on(pinned, [ALLOWED[0]])
        if backend == "process":
            assert pinned.isolation["cpu"] == ALLOWED[0]
    with make_executor(backend, workers=1, pin_cpus=False) as free:
        assert free.slot_cpus == [None]
        assert runs_on(free, ALLOWED)


def test_pinned_slots_still_judge_correctly(lock_dir):
    programs = {"def f(x):\n    return x + 1\n": PASSED, "def f(x):\n    return x\n": FAILED}
    jobs = [Job(str(i), program, "assert f(1) == 2\n", "f") for i, program in enumerate(programs)]
    with make_executor("process", workers=len(ALLOWED)) as executor:
        assert executor.slot_cpus == ALLOWED
        assert [v.status for v in executor.run(jobs * 10, Limits())] == list(programs.values()) * 10
