"""benchmarks/iad.py on the tiny fixtures with tiny settings: every arm, the sweep, the JSON shape."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("iad_benchmark", REPO / "benchmarks" / "iad.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_iad_benchmark_runs_every_arm_at_equal_budget_and_writes_the_issues_json(starter_model, feedback_reranker,
                                                                                 tmp_path):
    reranker_dir, _ = feedback_reranker
    out = tmp_path / "iad.json"
    # The starter stands in for the repair-trained model too: this is about the benchmark's mechanics.
    code = _benchmark().main(["--json", str(out), "--split", "synthetic:validation", "--problems", "2", "--seeds", "2",
                              "--budget", "2", "--rounds", "2", "--sweep", "oracle,examples+reranker,noisy:0.5",
                              "--starter", str(starter_model), "--repair", str(starter_model),
                              "--reranker", str(reranker_dir), "--backend", "hf", "--max-tokens", "48"])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["models"]) == {"starter", "repair"}
    for model in result["models"].values():
        for arm in ("bon", "iad", "iad_no_feedback", "iad_shuffled"):
            stats = model[arm]
            assert set(stats) >= {"pass@1", "pass@1_sd", "generations", "tokens", "seconds"}
            assert 0 <= stats["pass@1"] <= 1 and stats["pass@1_sd"] is not None and stats["seeds"] == 2
            # Equal budget: nobody draws more than N = 2 generations per problem (early stop may draw fewer).
            assert 0 < stats["generations"] <= 2 and stats["tokens"] > 0
        assert model["bon"]["generations"] == 2  # best-of-N spends its whole budget at once
        assert set(model["sweep"]) == {"oracle", "examples+reranker", "noisy:0.5"}
        assert model["sweep"]["oracle"]["analysis_only"] and not model["sweep"]["noisy:0.5"]["analysis_only"]
        assert model["sweep"]["examples+reranker"]["iad"] == model["iad"]
    assert set(result["targets"]["repair"]) >= {"iad_minus_bon", "iad_at_least_bon_plus_3", "no_feedback_not_above_bon"}
    assert result["settings"]["per_round"] == 1 and result["settings"]["problems"] == 2
