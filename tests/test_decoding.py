"""Decoding: verifiers on the real sandbox, the feedback format, best-of-N against IAD
at equal budget (rounds, early stop, best-so-far, the no-feedback and shuffled
controls), and `itercode decode` end to end on the starter model (HF, and the
openai backend against a real `vllm serve`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codegen.decoding import Check, DecodeSettings, IADState, base_feedback, chat_feedback, decode_problems, \
    make_verifier, refine_prompt
from codegen.decoding.feedback import Attempt
from codegen.decoding.iterative import derangement
from codegen.decoding.verifiers import NoisyVerifier, ScoreVerifier
from codegen.errors import UserError
from codegen.judging import Judge
from codegen.problems import Problem
from codegen.samplers import Completion, SamplingParams

REPO = Path(__file__).resolve().parents[1]

PROMPT = '''def add_one(xs):
    """Add 1 to each number.

    >>> add_one([1, 2])
    [2, 3]
    """
'''
RIGHT = "    return [x + 1 for x in xs]\n"
WRONG = "    return [x + 2 for x in xs]\n"
CRASH = "    return [x + y for x in xs]\n"
BROKEN = "    return (\n"


def problem(name: str = "add_one", tests: str | None = None) -> Problem:
    prompt = PROMPT.replace("add_one", name)
    return Problem(f"t/{name}", prompt, tests or "def check(candidate):\n    assert candidate([5]) == [6]\n",
                   name, code_prefix=prompt)


@pytest.fixture(scope="module")
def judge():
    with Judge(workers=2) as j:
        yield j


# ---- verifiers on the real sandbox ------------------------------------------------------------

def test_examples_verifier_reports_the_call_the_expected_value_and_what_came_back(judge):
    p = problem()
    right, wrong, crash, broken = make_verifier("examples", judge=judge).check([(p, c) for c in (RIGHT, WRONG, CRASH, BROKEN)])
    assert right.satisfied and right.line == "examples: 1/1 passed" and right.failure is None
    assert not wrong.satisfied and wrong.failure == "add_one([1, 2]) should be [2, 3], got [3, 4]"
    assert crash.failure == "add_one([1, 2]) should be [2, 3], raised NameError: name 'y' is not defined"
    assert broken.line == "examples: error" and broken.failure.startswith("SyntaxError")
    assert right.key > wrong.key > broken.key  # a wrong value ranks above a program that does not run


def test_printed_output_cannot_forge_what_came_back(judge):
    forged = "    print('AssertionError: example 0 returned [2, 3]')\n    return 0\n"
    [check] = make_verifier("examples", judge=judge).check([(problem(), forged)])
    assert check.failure == "add_one([1, 2]) should be [2, 3], got 0"


def test_a_prompt_without_examples_gives_no_verdict_and_never_satisfies(judge):
    p = Problem("t/plain", "def f(x):\n    pass\n", "assert f(1) == 1\n", "f", code_prefix="def f(x):\n")
    [check] = make_verifier("examples", judge=judge).check([(p, "    return x\n")])
    assert check.status == "none" and not check.satisfied and check.line == "examples: none to run"


def test_oracle_runs_the_hidden_tests_and_is_labelled_analysis_only(judge):
    p = problem(tests="def check(candidate):\n    assert candidate([5]) == [6]\n")
    verifier = make_verifier("oracle", judge=judge)
    right, wrong = verifier.check([(p, RIGHT), (p, WRONG)])
    assert verifier.analysis_only and right.analysis_only and right.satisfied and not wrong.satisfied
    assert "hidden tests" in right.line and "analysis only" in right.line


def test_examples_plus_reranker_ranks_by_examples_then_score(judge):
    verifier = make_verifier("examples+reranker", judge=judge, score_fn=lambda items: [len(c) for _, c in items])
    right, wrong = verifier.check([(problem(), RIGHT), (problem(), WRONG + "    # long comment\n")])
    assert wrong.score > right.score and right.key > wrong.key
    assert right.line.startswith("examples: 1/1 passed; reranker score")


def test_noisy_verifier_flips_the_stated_share_and_repeats_itself():
    items = [(problem(f"f{i}"), f"    return {i}\n") for i in range(400)]
    inner = ScoreVerifier(lambda its: [1.0] * len(its))
    flips = [c.flipped for c in NoisyVerifier(inner, 0.25, seed=3).check(items)]
    assert 0.18 < sum(flips) / len(flips) < 0.32
    assert flips == [c.flipped for c in NoisyVerifier(inner, 0.25, seed=3).check(items)]
    assert flips != [c.flipped for c in NoisyVerifier(inner, 0.25, seed=4).check(items)]
    assert all(c.score == -1.0 for c in NoisyVerifier(inner, 1.0).check(items))
    with pytest.raises(UserError, match="flip rate"):
        make_verifier("noisy:x", judge=None)
    with pytest.raises(UserError, match="needs a reranker"):
        make_verifier("noisy:0.1", judge=Judge())


def test_noisy_examples_turn_a_pass_into_a_fail_and_back():
    from codegen.decoding.verifiers import flipped

    passing = Check(1, 1, "passed", satisfied=True)
    failing = Check(0, 1, "failed", failure="f(1) should be 2, got 3")
    assert not flipped(passing).satisfied and flipped(passing).line == "examples: 0/1 passed"
    assert flipped(failing).satisfied and flipped(failing).failure is None


# ---- the feedback format -------------------------------------------------------------------

def test_base_feedback_shows_best_and_worst_with_verdicts_as_comments_before_the_function():
    best = Attempt(WRONG, Check(0, 1, "failed", failure="add_one([1, 2]) should be [2, 3], got [3, 4]"))
    worst = Attempt(BROKEN, Check(0, 1, "error", failure="SyntaxError: '(' was never closed"))
    state = IADState(problem())
    state.candidates = []  # built by hand below, as add_round would
    text = base_feedback("add_one", best, worst) + PROMPT
    lines = text.splitlines()
    assert lines[0] == "# Earlier attempts at add_one, with what the checks said."
    assert "# Best so far (examples: 0/1 passed):" in lines and "#   add_one([1, 2]) should be [2, 3], got [3, 4]" in lines
    assert "# Worst so far (examples: error):" in lines and "# |     return (" in lines
    assert text.endswith(PROMPT) and all(line.startswith("#") for line in base_feedback("add_one", best, worst).splitlines())
    compile(text + RIGHT, "<feedback>", "exec")  # the model still continues a valid program


def test_chat_feedback_is_prose_with_code_blocks():
    best = Attempt(WRONG, Check(0, 1, "failed", failure="add_one([1, 2]) should be [2, 3], got [3, 4]"))
    text = chat_feedback("add_one", best)
    assert "Best so far (examples: 0/1 passed):" in text and "```python\n    return [x + 2 for x in xs]\n```" in text
    assert "Worst so far" not in text  # one attempt only: it is both


def test_feedback_shrinks_until_the_prompt_fits():
    state = IADState(problem())
    checks = [Check(0, 1, "failed", failure="add_one([1, 2]) should be [2, 3], got [3, 4]"), Check(0, 1, "error")]
    state.add_round([Completion(WRONG * 20), Completion(BROKEN)], checks, prompt=PROMPT)
    full = refine_prompt(state.problem, state)
    assert "Worst so far" in full and full.count("# |") == 13 + 1
    small = refine_prompt(state.problem, state, fits=lambda t: len(t) < len(PROMPT) + 200)
    assert "Worst so far" not in small and "got [3, 4]" in small and "# |" not in small
    assert refine_prompt(state.problem, state, fits=lambda t: len(t) <= len(PROMPT)) == PROMPT


def test_chat_models_get_the_feedback_through_their_chat_template(starter_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(starter_model))
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    state = IADState(problem())
    state.add_round([Completion(WRONG)], [Check(0, 1, "failed", failure="add_one([1, 2]) should be [2, 3], got [3, 4]")],
                    prompt=PROMPT)
    text = refine_prompt(state.problem, state, tokenizer=tokenizer, chat_template=True)
    user, answer = text.split("<|assistant|>")
    assert user.startswith("<|user|>Complete the following Python function") and "```python\n" + PROMPT in user
    assert "Best so far (examples: 0/1 passed):\n- add_one([1, 2]) should be [2, 3], got [3, 4]" in user
    assert answer == "```python\n" + PROMPT  # the answer is started in the code block, as in round 0
    assert refine_prompt(state.problem, None, tokenizer=tokenizer, chat_template=True).count("Earlier attempts") == 0


# ---- bon and iad at equal budget (a scripted sampler: each call's completions are given) -------

class ScriptedSampler:
    """Returns scripted completions per call and records every prompt and seed (a real Sampler's shape)."""

    def __init__(self, script):
        self.script, self.calls = list(script), []

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params.n, params.seed))
        texts = self.script.pop(0)
        return [[Completion(texts(p, j) if callable(texts) else texts[j], num_tokens=3) for j in range(params.n)]
                for p in prompts]

    def close(self):
        pass


def _decode(sampler, problems, judge, **settings):
    params = SamplingParams(max_tokens=32, seed=7)
    return decode_problems(sampler, problems, make_verifier("examples", judge=judge), DecodeSettings(**settings), params)


def test_bon_draws_the_whole_budget_in_one_round(judge):
    sampler = ScriptedSampler([[WRONG, CRASH, RIGHT, WRONG]])
    [row] = _decode(sampler, [problem()], judge, strategy="bon", budget=4)
    assert len(sampler.calls) == 1 and sampler.calls[0][1] == 4 and sampler.calls[0][0] == [PROMPT]
    assert row["completion"] == RIGHT and row["decode"]["generations"] == 4 and row["decode"]["pick"]["index"] == 2


def test_iad_rounds_show_feedback_keep_the_best_and_use_a_new_seed_each_round(judge):
    sampler = ScriptedSampler([[WRONG, BROKEN], [CRASH, BROKEN], [BROKEN, BROKEN]])
    [row] = _decode(sampler, [problem()], judge, strategy="iad", budget=6, rounds=3)
    assert [n for _, n, _ in sampler.calls] == [2, 2, 2] and len({seed for _, _, seed in sampler.calls}) == 3
    round2 = sampler.calls[1][0][0]
    assert "# Best so far (examples: 0/1 passed):" in round2 and "got [3, 4]" in round2 and round2.endswith(PROMPT)
    assert "# Worst so far (examples: error):" in round2
    # Later rounds were worse: the round-0 candidate stays the answer.
    assert row["completion"] == WRONG and row["decode"]["pick"] == {**row["decode"]["pick"], "round": 0, "index": 0}
    assert row["decode"]["generations"] == 6 and len(row["decode"]["rounds"]) == 3
    assert row["decode"]["rounds"][1]["candidates"][0]["check"]["failure"].endswith("raised NameError: name 'y' is not defined")


def test_iad_stops_a_problem_once_the_verifier_is_satisfied(judge):
    a, b = problem("a_one"), problem("b_one")
    first = lambda prompt, j: RIGHT if "def a_one" in prompt and j == 0 else WRONG  # noqa: E731
    sampler = ScriptedSampler([first, [WRONG, WRONG], [RIGHT, RIGHT]])
    rows = _decode(sampler, [a, b], judge, strategy="iad", budget=6, rounds=3)
    # Problem a passed its example in round 0: later rounds sample only b.
    assert [len(prompts) for prompts, _, _ in sampler.calls] == [2, 1, 1]
    assert rows[0]["decode"]["generations"] == 2 and rows[0]["decode"]["stopped_early"]
    assert rows[1]["decode"]["generations"] == 6 and rows[1]["completion"] == RIGHT
    sampler = ScriptedSampler([first, [WRONG, WRONG], [RIGHT, RIGHT]])
    rows = _decode(sampler, [a, b], judge, strategy="iad", budget=6, rounds=3, early_stop=False)
    assert [r["decode"]["generations"] for r in rows] == [6, 6]


def test_no_feedback_control_samples_the_plain_prompt_every_round(judge):
    sampler = ScriptedSampler([[WRONG, WRONG], [WRONG, WRONG]])
    _decode(sampler, [problem()], judge, strategy="iad", budget=4, rounds=2, feedback="none")
    assert [prompts for prompts, _, _ in sampler.calls] == [[PROMPT], [PROMPT]]
    assert sampler.calls[0][2] != sampler.calls[1][2]  # same prompt, new seed: new candidates


def test_shuffled_control_shows_another_problems_feedback(judge):
    problems = [problem(f"fn{i}") for i in range(3)]
    sampler = ScriptedSampler([[WRONG], [WRONG]])
    rows = _decode(sampler, problems, judge, strategy="iad", budget=2, rounds=2, feedback="shuffled")
    for p, prompt, row in zip(problems, sampler.calls[1][0], rows):
        shown = prompt.splitlines()[0].removeprefix("# Earlier attempts at ").split(",")[0]
        assert shown != p.entry_point and prompt.endswith(p.prompt)
        assert row["decode"]["rounds"][1]["feedback_from"] == f"t/{shown}"
    assert sorted(derangement(7, 1)) == list(range(7)) and all(i != j for i, j in enumerate(derangement(7, 1)))
    with pytest.raises(UserError, match="at least 2 problems"):
        _decode(ScriptedSampler([]), problems[:1], judge, strategy="iad", budget=2, rounds=2, feedback="shuffled")


def test_budget_must_split_into_rounds():
    with pytest.raises(UserError, match="not a multiple of --rounds 3"):
        DecodeSettings(strategy="iad", budget=8, rounds=3).check()
    assert DecodeSettings(strategy="bon", budget=8, rounds=3).check().plan == (1, 8)


# ---- `itercode decode` end to end ------------------------------------------------------------

def _cli(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "codegen.app.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def _check_picks(out: Path, n_problems: int, budget: int) -> list[dict]:
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == n_problems
    for row in rows:
        d = row["decode"]
        assert d["generations"] == sum(len(r["candidates"]) for r in d["rounds"]) <= budget
        picked = d["rounds"][d["pick"]["round"]]["candidates"][d["pick"]["index"]]
        assert picked["completion"] == row["completion"] and d["completion_tokens"] > 0
    return rows


@pytest.mark.slow
def test_decode_cli_writes_picks_that_eval_scores(starter_model, tmp_path):
    out = tmp_path / "picks.jsonl"
    done = _cli("decode", "--strategy", "iad", "--model", str(starter_model), "--problems", "synthetic:validation",
                "--limit", "3", "--budget", "4", "--rounds", "2", "--verifier", "oracle", "--backend", "hf",
                "--max-tokens", "64", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ORACLE" in done.stderr and "analysis only" in done.stderr
    rows = _check_picks(out, 3, 4)
    assert all(r["decode"]["analysis_only"] and r["meta"]["analysis_only"] for r in rows)
    scored = _cli("eval", "--problems", "synthetic:validation", "--samples", str(out), "--json", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    summary = json.loads(scored.stdout)
    # The oracle verifier grades with the hidden tests: its pick passes exactly when it said so.
    assert summary["samples"] == 3
    assert summary["pass_at_k"]["pass@1"] == sum(r["decode"]["pick"]["check"]["satisfied"] for r in rows) / 3
    assert "hidden tests" in summary["analysis_only"]
    table = _cli("eval", "--problems", "synthetic:validation", "--samples", str(out), cwd=tmp_path)
    assert "ANALYSIS ONLY: 3 of 3 samples were picked with the hidden tests" in table.stdout


@pytest.mark.vllm
@pytest.mark.slow
def test_decode_with_the_openai_backend_against_a_real_vllm_serve(vllm_server, starter_model, tmp_path):
    out = tmp_path / "picks.jsonl"
    # The tokenizer lets decode count prompt tokens and shrink feedback to the served model's context.
    done = _cli("decode", "--strategy", "iad", "--model", "starter", "--backend", "openai", "--tokenizer", str(starter_model),
                "--base-url", f"http://127.0.0.1:{vllm_server}/v1", "--problems", "synthetic:validation",
                "--limit", "3", "--budget", "4", "--rounds", "2", "--verifier", "examples", "--max-tokens", "64",
                "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = _check_picks(out, 3, 4)
    later = [r for row in rows for r in row["decode"]["rounds"][1:]]
    # A second round ran for an unsolved problem, and its prompt carried the feedback.
    assert all(r["prompt"].startswith("# Earlier attempts at ") for r in later)
    assert all(r["meta"]["backend"] == "openai" and not r["decode"]["analysis_only"] for r in rows)
    assert all(r["decode"]["prompt_tokens"] > 0 for r in rows)
