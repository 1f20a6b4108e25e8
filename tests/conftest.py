"""Session-wide fixtures shared by the whole suite.

Expensive things (tiny models, a vLLM engine) are built once per session here.
"""

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_verdict_cache(tmp_path_factory):
    """Every test run gets its own verdict cache, never the user's ~/.cache/itercode."""
    import os

    old = os.environ.get("ITERCODE_CACHE")
    os.environ["ITERCODE_CACHE"] = str(tmp_path_factory.mktemp("itercode-cache"))
    yield
    if old is None:
        os.environ.pop("ITERCODE_CACHE", None)
    else:
        os.environ["ITERCODE_CACHE"] = old


@pytest.fixture(scope="session")
def starter_model(tmp_path_factory):
    """Path to a quick starter model (byte-level BPE tokenizer + tiny Llama, HF format).

    Built with `codegen.starter.build_starter(quick=True)`: it already writes
    plausible code for synthetic prompts, so sampler and pipeline tests have
    real output to judge. The build is deterministic, so it is kept under
    .itercode-cache/test-models/<hash of the builder's code, libraries, args>
    and reused by later sessions; ITERCODE_TEST_REBUILD=1 builds afresh in a
    temp dir. (test_starter.py builds its own models to test the builder.)
    """
    import os
    from pathlib import Path

    from codegen.starter import build_starter, cached_starter

    if os.environ.get("ITERCODE_TEST_REBUILD") == "1":
        return build_starter(tmp_path_factory.mktemp("starter") / "model", seed=0, quick=True, progress=False)
    cache_root = Path(__file__).resolve().parent.parent / ".itercode-cache" / "test-models"
    return cached_starter(cache_root, seed=0, quick=True, progress=False)


@pytest.fixture(scope="session")
def vllm_sampler(starter_model):
    """ONE vLLM engine on `starter_model` for the whole session (loading takes 15-90 s on 2 cores).

    Share it: do not build a second engine in the test process. KV cache: 1 GiB.
    """
    pytest.importorskip("vllm")
    from codegen.samplers import make_sampler

    sampler = make_sampler("vllm", str(starter_model), seed=0, kv_cache_gib=1)
    yield sampler
    sampler.close()


def docker_answers() -> bool:
    """True when `docker info` succeeds (a dockerd is reachable)."""
    import subprocess

    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def require_docker() -> None:
    """Skip the calling test without a dockerd; in CI (CI set) fail instead, since docker tests must run there."""
    import os

    if docker_answers():
        return
    if os.environ.get("CI"):
        pytest.fail("CI is set but no dockerd answers `docker info`: start one (scripts/ensure-dockerd.sh)")
    pytest.skip("no dockerd answers `docker info`")


@pytest.fixture(scope="session")
def ray_cluster():
    """ONE real two-node Ray cluster on this machine for the session (`ray.cluster_utils.Cluster`:
    a head and a worker node, 1 CPU each, small object stores), this process connected as its driver.
    ``cluster.address`` is its GCS (``HOST:PORT``), ``cluster.client_address`` its Ray Client
    server (``ray://HOST:PORT``), as a driver outside the cluster would reach it.

    Tests may add nodes and remove the ones they added; the two first nodes stay. Executors made
    with ``make_executor("ray", ...)`` use this connection (and never shut it down).
    """
    import logging
    import os
    import socket

    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        client_port = s.getsockname()[1]
    small = {"num_cpus": 1, "object_store_memory": 80 << 20}
    cluster = Cluster(initialize_head=True,
                      head_node_args={**small, "include_dashboard": False, "ray_client_server_port": client_port})
    try:
        cluster.add_node(**small)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        cluster.small_node_args = small
        cluster.client_address = f"ray://127.0.0.1:{client_port}"
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module", params=["process", pytest.param("docker", marks=pytest.mark.docker),
                                        pytest.param("ray", marks=pytest.mark.ray)])
def backend(request):
    """A sandbox executor with two workers (an attack and its canary run side by side), on each backend
    (ray: one actor on each node of `ray_cluster`)."""
    from sandbox import make_executor

    if request.param == "docker":
        require_docker()
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    executor = make_executor(request.param, workers=2)
    yield executor
    executor.close()


def uid_processes(uids) -> list[str]:
    """Pids of the host's processes running as any of ``uids`` (the sandbox's slot uids)."""
    import os
    from pathlib import Path

    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            found += [pid for line in lines if line.startswith("Uid:") and int(line.split()[1]) in uids]
    return found


def _constant_twins(problems):
    """(problem, right, wrong): the reference solution and a copy with one constant off by one.

    The two read almost the same; only running the docstring's example tells them apart.
    """
    import re

    out = []
    for p in problems:
        body = p.canonical_solution
        match = list(re.finditer(r"(?<![\w\[])(\d)(?!\d)", body.split("\n")[0]))
        if match:
            m = match[-1]
            wrong = body[: m.start()] + str((int(m.group()) + 1) % 10) + body[m.end():]
            out.append((p, body, wrong))
    return out


@pytest.fixture(scope="session")
def feedback_reranker(starter_model, tmp_path_factory):
    """A reranker trained with docstring-example feedback on 30 twin pairs; and 10 unseen twins.

    Only twins whose example tells them apart are kept (a changed constant may
    leave that one output the same).
    """
    from codegen.synthetic import load_split
    from rerankers.data import Pair
    from rerankers.feedback import ExampleRunner
    from rerankers.train import TrainConfig, train_reranker

    twins = _constant_twins(load_split("reference")[:120])
    with ExampleRunner() as runner:
        lines = runner.lines([p.prompt for p, _, _ in twins for _ in (0, 1)],
                             [text for _, right, wrong in twins for text in (right, wrong)])
    twins = [t for t, a, b in zip(twins, lines[::2], lines[1::2]) if a.endswith("1/1 passed\n") and "0/1" in b]
    assert len(twins) >= 40
    pairs = [Pair(p.task_id, p.prompt, right, wrong) for p, right, wrong in twins[:30]]
    out = tmp_path_factory.mktemp("feedback-reranker") / "rr"
    train_reranker(pairs, str(starter_model), out,
                   TrainConfig(epochs=8, min_steps=0, learning_rate=2e-3, batch_size=8, progress=False, feedback="examples"))
    return out, twins[30:40]


def slow_unlabeled_copy(problems_file: Path, dest: Path, seconds: float = 0.2) -> Path:
    """A copy of a lenient problems file whose tests also sleep ``seconds``: the
    SIGKILL tests need an execute stage long enough to be killed inside (with a
    warm verdict cache or a fast sandbox it can finish in a tenth of a second)."""
    from codegen.io import read_jsonl, write_jsonl_atomic

    rows = read_jsonl(problems_file)
    for row in rows:
        row["tests"] = f"import time\n\n\ndef check(candidate):\n    time.sleep({seconds})\n    candidate([3, 1, 2])\n"
    write_jsonl_atomic(dest, rows)
    return dest


# ---- a real `vllm serve` (the OpenAI sampler's and `itercode decode --backend openai`'s tests) ----

def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port the kernel hands out (bind to 0) is free now but may be handed out
    again before a slow server binds it (vLLM loads for minutes, and its
    engine's own sockets take ephemeral ports): CI once lost a test to
    "address already in use". Ports below the range are never handed out.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(10001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in 10000-{low}")


@pytest.fixture(scope="module")
def vllm_server(starter_model, tmp_path_factory):
    """A real vLLM OpenAI server (its own process) on 127.0.0.1, serving the starter model as "starter"."""
    pytest.importorskip("vllm")
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(starter_model),
           "--served-model-name", "starter", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--seed", "0",
           # vllm-cpu dies rewinding a seeded request's generator when a prefill is chunked (see vllm_backend).
           "--no-enable-chunked-prefill", "--max-num-batched-tokens", "4096"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 420
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as r:
                    if "starter" in r.read().decode():
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not ready after 420 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def tiny_repos(tmp_path_factory):
    """A folder of six small hand-made repositories with cross-file structure (tests/tiny_repos.py)."""
    from tiny_repos import make_tiny_repos

    root = tmp_path_factory.mktemp("tiny-repos")
    make_tiny_repos(root, n=6, seed=0)
    return root
