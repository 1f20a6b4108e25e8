"""The starter model: tokenizer round trips, HF loading, determinism, the CLI."""
import ast
import dataclasses
import json

import pytest

from codegen.starter import QUICK, build_starter, train_tokenizer
from codegen.synthetic import load_split

TINY = dataclasses.replace(QUICK, steps=8)  # enough to compare weights, seconds to build


@pytest.fixture(scope="module")
def reference():
    return load_split("reference")


@pytest.fixture(scope="module")
def tokenizer(reference):
    return train_tokenizer([p.prompt + p.canonical_solution for p in reference], 512)


def test_tokenizer_round_trips_code_and_whitespace(tokenizer, reference):
    texts = [p.prompt + p.canonical_solution for p in reference[:50]]
    texts += ["\tdef  f(x):\n\n        return x  # trailing  \n", "s = 'héllo ✓ 世界'\r\n", "   \n\n  \t"]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text


def test_prompt_tokens_are_a_prefix_of_prompt_plus_completion(tokenizer, reference):
    """Why newlines are isolated: training and sampling see one token boundary."""
    for p in reference[:100]:
        prompt = tokenizer(p.prompt, add_special_tokens=False)["input_ids"]
        full = tokenizer(p.prompt + p.canonical_solution, add_special_tokens=False)["input_ids"]
        assert full[: len(prompt)] == prompt


def test_tokenizer_training_is_deterministic(reference):
    texts = [p.prompt + p.canonical_solution for p in reference]
    a, b = train_tokenizer(texts, 512), train_tokenizer(texts, 512)
    assert a.get_vocab() == b.get_vocab()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()


def test_starter_loads_in_transformers_with_special_tokens(starter_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(starter_model)
    model = AutoModelForCausalLM.from_pretrained(starter_model)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id == tok.eos_token_id
    assert model.config.eos_token_id == tok.eos_token_id == model.generation_config.eos_token_id
    assert model.config.architectures == ["LlamaForCausalLM"]
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    info = json.loads((starter_model / "starter_info.json").read_text())
    assert info["quick"] is True and info["train_examples"] == len(load_split("reference"))


def test_quick_starter_writes_plausible_python(starter_model):
    """Greedy completions of held-out prompts mostly parse as Python and end by themselves."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(starter_model)
    model = AutoModelForCausalLM.from_pretrained(starter_model)
    problems = load_split("heldout")[:8]
    parsed = ended = 0
    for p in problems:
        ids = tok(p.prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=96, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[0][ids["input_ids"].shape[1]:].tolist()
        ended += tok.eos_token_id in new
        text = tok.decode(new, skip_special_tokens=True)
        try:
            ast.parse(p.prompt + text)
            parsed += "return" in text
        except SyntaxError:
            pass
    assert parsed >= 6 and ended >= 6, (parsed, ended)


@pytest.mark.slow
def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    """Same seed and threads, the same weights; one thread or two, the same model up to float rounding
    (where MKL splits a weight gradient's sum over the threads, as on AVX-512 CPUs, the last bits differ);
    another seed, other weights."""
    from safetensors.torch import load_file

    builds = {name: build_starter(tmp_path / name, seed=seed, config=TINY, progress=False, threads=threads)
              for name, seed, threads in (("a", 3, 2), ("again", 3, 2), ("one_thread", 3, 1), ("other", 4, 2))}
    w = {name: load_file(path / "model.safetensors") for name, path in builds.items()}
    assert w["a"].keys() == w["again"].keys() == w["one_thread"].keys()
    assert all((w["a"][k] == w["again"][k]).all() for k in w["a"])
    assert max((w["a"][k] - w["one_thread"][k]).abs().max().item() for k in w["a"]) < 1e-5
    assert max((w["a"][k] - w["other"][k]).abs().max().item() for k in w["a"]) > 1e-2
    assert (builds["a"] / "tokenizer.json").read_text() == (builds["one_thread"] / "tokenizer.json").read_text()


def test_build_replaces_an_existing_model_and_leaves_no_temp_dirs(tmp_path):
    out = tmp_path / "model"
    build_starter(out, seed=0, config=dataclasses.replace(TINY, steps=1), progress=False)
    (out / "stale.txt").write_text("from an older build")
    build_starter(out, seed=0, config=dataclasses.replace(TINY, steps=1), progress=False)
    assert (out / "config.json").exists() and not (out / "stale.txt").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model"]


def test_cli_builds_and_rejects_bad_out(tmp_path, capsys):
    from codegen.app.cli import main

    assert main(["starter", "--out", str(tmp_path / "m"), "--quick", "--steps", "2"]) == 0
    assert "starter model saved to" in capsys.readouterr().out
    assert (tmp_path / "m" / "model.safetensors").exists()

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["starter", "--out", str(a_file), "--quick"]) == 2
    assert "not a directory" in capsys.readouterr().err

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.md").write_text("mine")
    assert main(["starter", "--out", str(busy), "--quick"]) == 2
    assert "holds no model" in capsys.readouterr().err
    assert (busy / "notes.md").read_text() == "mine"

    assert main(["starter", "--out", str(tmp_path / "z"), "--steps", "0"]) == 2
    assert main(["starter", "--out", str(tmp_path / "z"), "--threads", "0"]) == 2
    assert "--threads 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: neither a number nor auto
        main(["starter", "--out", str(tmp_path / "z"), "--threads", "many"])
    assert "whole number of threads or auto" in capsys.readouterr().err


def test_cached_starter_builds_once_per_key(tmp_path, monkeypatch):
    """Cache logic only (the real build behind it is the `starter_model` fixture)."""
    from codegen import starter

    calls = []

    def fake_build(out_dir, seed=0, quick=False, family_seed=0, progress=True):
        calls.append(seed)
        out_dir.mkdir(parents=True)
        (out_dir / "starter_info.json").write_text("{}")
        return out_dir

    monkeypatch.setattr(starter, "build_starter", fake_build)
    a = starter.cached_starter(tmp_path, seed=0, quick=True)
    b = starter.cached_starter(tmp_path, seed=0, quick=True)
    c = starter.cached_starter(tmp_path, seed=1, quick=True)
    assert a == b != c and calls == [0, 1]
    assert a.name == starter.build_key(0, True) and (a / "starter_info.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, c.name])  # no staging left


def test_fixture_model_is_the_cached_quick_build(starter_model):
    from codegen.starter import build_key

    info = json.loads((starter_model / "starter_info.json").read_text())
    assert info["seed"] == 0 and info["quick"] is True
    assert starter_model.name in (build_key(0, True), "model")


def test_batches_cover_small_and_empty_data_sets():
    import torch

    from codegen.starter import _batches

    few = [([1, 2, 3], [-100, 2, 3]), ([4, 5], [-100, 5])]
    got = list(_batches(few, 16, 3, torch.Generator().manual_seed(0), pad_id=0))
    assert len(got) == 3 and got[0][0].shape == (2, 3)
    with pytest.raises(ValueError, match="no training examples"):
        list(_batches([], 16, 3, torch.Generator(), pad_id=0))
