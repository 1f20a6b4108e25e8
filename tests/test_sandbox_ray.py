"""The Ray backend on a real multi-node Ray cluster on this machine (`ray_cluster`
in conftest.py: two nodes of 1 CPU each): the process backend's verdicts, no
sample lost or counted twice when a node goes away mid-run, dead actors
replaced, unplaceable jobs as host infra_errors, and a GRPO run whose rewards
run on the cluster. The attack suite runs on it too (test_sandbox_attacks.py,
its ``backend`` fixture)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sandbox import FAILED, INFRA_ERROR, PASSED, TIMEOUT, ERROR, Job, Limits, backend_options, make_executor
from sandbox.process import VERSION as PROCESS_VERSION
from sandbox.ray_backend import plan_actors
from test_grpo_loop import loop_command, problem_files, quick_overrides, read_jsonl  # noqa: F401 - its fixture too

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]


def _mixture_jobs():
    from mixture import mixture

    from codegen.datasets import load_problems
    from codegen.judging import to_job
    from codegen.samples import Sample

    problems = load_problems("humaneval")
    by_id = {p.task_id: p for p in problems}
    return [to_job(by_id[r["task_id"]], Sample(r["task_id"], r["completion"], sample_id=r["sample_id"]))
            for r in mixture(problems)]


def _slow_jobs(n: int, seconds: float = 0.3) -> list[Job]:
    """Jobs that each take a while, half passing: a node removed mid-run surely holds some."""
    program = f"import time\ndef f(x):\n    time.sleep({seconds})\n    return x * 2\n"
    return [Job(f"slow-{i}", program, f"assert f({i}) == {i * 2 if i % 2 == 0 else -1}\n", "f") for i in range(n)]


def _summary(verdicts):
    return [(v.job_id, v.status, v.tests_passed, v.tests_total) for v in verdicts]


# ------------------------------------------------------------------ no cluster needed
def test_plan_spreads_actors_over_nodes_by_free_cpus():
    assert plan_actors({"b": 1.0, "a": 2.0}, 1, None) == ["a", "b", "a"]
    assert plan_actors({"a": 4.0, "b": 4.0}, 2, 6) == ["a", "b", "a"]  # 3 actors of 2 slots for 6 workers
    assert plan_actors({"a": 0.5, "b": 1.0}, 1, None) == ["b"]  # a fraction of a CPU hosts no actor
    assert plan_actors({}, 1, None) == []


def test_backend_options_name_the_ray_backend():
    assert backend_options("ray", "ray://head:10001") == {"address": "ray://head:10001"}
    assert backend_options("ray") == {}
    with pytest.raises(ValueError, match="for the ray backend"):
        backend_options("process", "auto")


def test_ray_init_options_start_a_small_quiet_local_runtime(monkeypatch):
    from sandbox.ray_runtime import init_options

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = init_options(None)
    assert local["address"] == "local" and local["include_dashboard"] is False
    assert local["num_cpus"] == os.cpu_count() and local["object_store_memory"] <= 256 << 20
    assert "runtime_env" not in local  # its workers are ours: Ray's prestarted ones take the actors
    auto = init_options("auto")
    assert auto["address"] == "auto" and "num_cpus" not in auto
    assert auto["runtime_env"]["py_modules"] == [str(REPO / "sandbox")]  # the driver's harness on every node
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert init_options(None)["address"] == "10.0.0.1:6379"


LOCAL_RUNTIME_SCRIPT = """
import os, sys
from sandbox import Job, Limits, make_executor, ray_runtime
before = os.environ.get("PYTHONPATH")
ray_runtime.acquire(None)
assert os.environ.get("PYTHONPATH") == before, "the caller's PYTHONPATH is restored"
with make_executor("ray", workers=1) as ex:
    v = ex.run([Job("a", "def f():\\n    return 1\\n", "assert f() == 1", "f")], Limits())
ray_runtime.release()
print(v[0].status, ex.version)
"""


@pytest.mark.slow
def test_a_local_runtime_runs_this_sandbox_code_without_shipping_it(tmp_path):
    """No address: a local Ray runtime whose actors import this checkout's sandbox (not an
    installed copy, not the working directory's), started with no runtime env so that Ray's
    prestarted workers take them."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", LOCAL_RUNTIME_SCRIPT], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == PASSED and "/process/" in out.stdout


# ------------------------------------------------------------------ on the two-node cluster
@pytest.mark.slow
def test_verdicts_equal_the_process_backend_on_the_mixed_humaneval_file(ray_cluster):
    jobs = _mixture_jobs()
    limits = Limits(timeout_s=3)
    with make_executor("ray") as ex:
        assert ex.workers == 2 and len(set(ex.nodes)) == 2  # one actor on each node
        assert ex.version.startswith(f"ray-1/process/{PROCESS_VERSION}/")
        seen = []
        ray_v = ex.run(jobs, limits, on_verdict=seen.append)
    with make_executor("process", workers=2) as proc_ex:
        process_v = proc_ex.run(jobs, limits)
    assert len(ray_v) == len(jobs) == 328 and sorted(v.job_id for v in seen) == sorted(j.job_id for j in jobs)
    assert _summary(ray_v) == _summary(process_v)
    assert {v.status for v in ray_v} == {PASSED, FAILED, ERROR, TIMEOUT}


@pytest.mark.slow
def test_a_node_removed_mid_eval_loses_no_sample_and_counts_none_twice(ray_cluster):
    import ray

    node = ray_cluster.add_node(**ray_cluster.small_node_args)  # a third node, removed below
    ray_cluster.wait_for_nodes()
    jobs = _slow_jobs(60)
    counts: Counter = Counter()
    try:
        with make_executor("ray") as ex:
            assert ex.workers == 3 and len(set(ex.nodes)) == 3
            doomed = [a for a in ex._actors if a.node_id == node.node_id]
            assert len(doomed) == 1
            doomed_uids = doomed[0].info["candidate_uids"]
            got: list = []

            def run():
                got.extend(ex.run(jobs, Limits(timeout_s=5), on_verdict=lambda v: counts.update([v.job_id])))

            t = threading.Thread(target=run)
            t.start()
            deadline = time.monotonic() + 60
            while sum(counts.values()) < 10 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sum(counts.values()) >= 10
            ray_cluster.remove_node(node, allow_graceful=False)
            node = None
            t.join(240)
            assert not t.is_alive()
            assert ex.workers == 2  # the removed node's actor is gone, the others carried its jobs
            assert ex.requeued >= 1  # it had jobs in flight
            assert counts == Counter(j.job_id for j in jobs)  # every job exactly once
            assert [v.job_id for v in got] == [j.job_id for j in jobs]
            expected = [PASSED if i % 2 == 0 else FAILED for i in range(len(jobs))]
            assert [v.status for v in got] == expected  # no infra_error: lost batches ran elsewhere
        # the removed node's runs left no process behind
        from conftest import uid_processes

        deadline = time.monotonic() + 20
        while doomed_uids and uid_processes(doomed_uids) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not doomed_uids or uid_processes(doomed_uids) == []
    finally:
        if node is not None:
            ray_cluster.remove_node(node)
    assert ray.is_initialized()


@pytest.mark.slow
def test_killed_actors_are_replaced_and_unplaceable_jobs_are_infra_errors(ray_cluster):
    import ray

    jobs = _slow_jobs(6, seconds=0.05)
    expected = [PASSED if i % 2 == 0 else FAILED for i in range(len(jobs))]
    with make_executor("ray", workers=1, placement_timeout_s=20) as ex:
        for a in ex._actors:
            ray.kill(a.handle, no_restart=True)
        assert [v.status for v in ex.run(jobs, Limits())] == expected  # a fresh actor took the jobs
        assert ex.workers == 1
        # Now its actor dies while every other CPU of the cluster is taken: nowhere to run.
        with make_executor("ray", workers=1, placement_timeout_s=20) as other:
            for a in ex._actors:
                ray.kill(a.handle, no_restart=True)
            time.sleep(1.0)  # the freed CPU shows up...
            with make_executor("ray", workers=1, placement_timeout_s=20) as hog:  # ...and is taken
                ex._placement_timeout_s = 2.0
                verdicts = ex.run(jobs, Limits())
                assert [v.status for v in verdicts] == [INFRA_ERROR] * len(jobs)
                assert "could not run this job" in verdicts[0].stderr and "ray start" in verdicts[0].stderr
                assert other.workers == hog.workers == 1


def test_no_free_cpu_is_a_clear_error_at_start(ray_cluster):
    with make_executor("ray") as ex:  # takes every free CPU
        assert ex.workers == 2
        with pytest.raises(RuntimeError, match="no Ray node could host a sandbox actor"):
            make_executor("ray", workers=1, placement_timeout_s=2)


@pytest.mark.slow
def test_eval_cli_runs_on_the_cluster_through_ray_client(ray_cluster, tmp_path):
    """`itercode eval --backend ray --ray-address ray://HOST:PORT` in a process of its own: its driver
    reaches the running cluster through Ray Client, as one outside the cluster would, and its verdicts
    are the process backend's."""
    import json

    from codegen.io import write_jsonl_atomic

    rows = [{"task_id": "HumanEval/0", "completion": "    return False\n"},
            {"task_id": "HumanEval/2", "completion": "    return number % 1.0\n"}]
    samples = write_jsonl_atomic(tmp_path / "samples.jsonl", rows)
    cmd = ["-m", "codegen.app.cli", "eval", "--problems", "humaneval", "--samples", str(samples), "--k", "1",
           "--no-cache", "--json", "--backend"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([os.sys.executable, *cmd, "ray", "--ray-address", ray_cluster.client_address], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["backend"] == "ray" and summary["status_counts"]["passed"] == 1
    assert summary["status_counts"]["failed"] == 1 and summary["infra_errors"] == 0
    wrong = subprocess.run([os.sys.executable, *cmd, "process", "--ray-address", "auto"], cwd=REPO,
                           capture_output=True, text=True, timeout=120, env=env)
    assert wrong.returncode != 0 and "for the ray backend" in wrong.stderr


def _pool_actors_of_other_jobs() -> list[dict]:
    """The sandbox actors that drivers other than this test process started on the cluster (dead ones included)."""
    import ray
    from ray._private.state import actors

    mine = ray.get_runtime_context().get_job_id()
    return [a for a in actors().values() if a.get("ActorClassName", "").endswith("PoolActor") and a.get("JobID") != mine]


@pytest.mark.slow
def test_a_grpo_run_gets_its_rewards_from_the_ray_backend(ray_cluster, tmp_path, problem_files, starter_model):
    """The policy loop (loops/grpo.py) for a few steps, its reward programs and validation run on the
    cluster (executor=ray, ray_address=the cluster's): the run finishes, the rewards vary, no host fault."""
    import json

    before = len(_pool_actors_of_other_jobs())
    overrides = quick_overrides(tmp_path / "runs", problem_files, starter_model, steps=2, validate_every=2,
                                test="[]", executor="ray", ray_address=ray_cluster.address)
    proc = subprocess.run(loop_command(overrides), cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    root = tmp_path / "runs" / "g"
    train = json.loads((root / "state.json").read_text())["stages"]["round-1/train"]["info"]
    assert train["steps"] == 2 and (root / "round-1" / "train" / "model" / "model.safetensors").exists()
    points = read_jsonl(root / "steps.jsonl")
    assert points and all(p.get("train_reward") is not None for p in points[1:])
    statuses = {k: v for p in points for k, v in p.items() if k.startswith("status/") and v}
    assert statuses and not any("infra_error" in k for k in statuses), statuses
    assert len(_pool_actors_of_other_jobs()) >= before + 2  # the loop's own actors, one per node


def test_serve_runs_request_tests_on_the_cluster(ray_cluster):
    """`itercode serve --sandbox ray --ray-address ...`: the server's request tests judge on the cluster."""
    from codegen.app.server.config import ServerConfig
    from codegen.app.server.ranking import TestRunner
    from codegen.errors import UserError
    from codegen.problems import Problem

    with pytest.raises(UserError, match="--ray-address is for --sandbox ray"):
        ServerConfig(model="m", sandbox="process", sandbox_ray_address="auto").check()
    cfg = ServerConfig(model="m", sandbox="ray", sandbox_ray_address=ray_cluster.address).check()
    runner = TestRunner.for_config(cfg)
    try:
        runner.start()
        assert runner.judge.describe()["backend"] == "ray"
        problem = Problem(task_id="req", prompt="def f(x):\n", tests="assert f(2) == 4\n", code_prefix="def f(x):\n",
                          entry_point="f")
        verdicts = runner.judge.run_pairs([(problem, "    return x * 2\n"), (problem, "    return x + 3\n")])
        assert [v["status"] for v in verdicts] == [PASSED, FAILED]
    finally:
        runner.close()


@pytest.mark.docker
def test_actors_can_hold_docker_pools(ray_cluster):
    from conftest import require_docker

    require_docker()
    jobs = _slow_jobs(6, seconds=0.0)
    with make_executor("ray", workers=2, pool="docker") as ex:
        assert ex.version.startswith("ray-1/docker/docker-") and len(set(ex.nodes)) == 2
        assert [v.status for v in ex.run(jobs, Limits())] == [PASSED if i % 2 == 0 else FAILED for i in range(6)]
