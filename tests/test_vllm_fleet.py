"""The ``vllm-ray`` sampler: two vLLM replicas of the tiny starter model as Ray actors on the
session's two-node cluster (`ray_cluster`), behind the sampler interface."""
from __future__ import annotations

import pytest

from codegen.errors import UserError
from codegen.samplers import LOOP_BACKENDS, SamplingParams
from codegen.samplers.vllm_fleet import shares


def test_shares_are_contiguous_and_balanced():
    assert shares(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shares(2, 4) == [(0, 1), (1, 2)]  # no empty share
    assert shares(0, 2) == [(0, 0)]


def test_loops_accept_the_fleet_and_its_keys():
    from loops.config import ITERTLConfig, broken_rules

    assert "vllm-ray" in LOOP_BACKENDS
    assert broken_rules(ITERTLConfig(sampler="vllm-ray", replicas=3, ray_address="auto")) == []
    assert any("replicas must be >= 1" in e for e in broken_rules(ITERTLConfig(sampler="vllm-ray", replicas=0)))
    assert any("ray_address is for" in e for e in broken_rules(ITERTLConfig(sampler="hf", ray_address="auto")))


def test_sample_cli_keeps_fleet_options_to_the_fleet():
    import argparse

    from codegen.app.commands.sample import add_arguments, sampler_options

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--model", "m", "--problems", "humaneval", "--out", "o", "--replicas", "3"])
    assert sampler_options(args, "vllm-ray")["replicas"] == 3
    with pytest.raises(UserError, match="for --backend vllm-ray"):
        sampler_options(args, "vllm")


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.ray
def test_two_replicas_sample_as_one_engine_and_survive_a_dead_replica(ray_cluster, starter_model):
    pytest.importorskip("vllm")
    import ray

    from codegen.samplers import make_sampler

    sampler = make_sampler("vllm-ray", str(starter_model), replicas=2, seed=0, kv_cache_gib=1,
                           ready_timeout_s=1200, enforce_eager=True)  # eager: no compile, a faster start
    try:
        assert sampler.replicas == 2 and len({i["node_id"] for i in sampler.infos}) == 2  # one per node
        prompts = [f"def f{i}(xs):\n    " for i in range(6)]
        params = SamplingParams(n=2, temperature=0.8, max_tokens=16, stop=[])
        first = sampler.generate(prompts, params)
        assert [len(c) for c in first] == [2] * 6
        texts = [[c.text for c in cs] for cs in first]
        # Prompt 4 sent alone with the seed one engine gives it (seed + i * n): the same samples.
        alone = sampler.generate(prompts[4:5], SamplingParams(n=2, temperature=0.8, max_tokens=16, stop=[], seed=8))
        assert [c.text for c in alone[0]] == texts[4]
        calls = ray.get([r.info.remote() for r in sampler._replicas])
        assert all(i["calls"] >= 1 for i in calls)  # both replicas sampled
        assert sampler.count_tokens(["def f():"])[0] > 0 and sampler.context_length >= 64
        # A replica dies: its share runs again on the other one, with the same seeds.
        ray.kill(sampler._replicas[1], no_restart=True)
        again = sampler.generate(prompts, params)
        assert [[c.text for c in cs] for cs in again] == texts and sampler.replicas == 1
    finally:
        sampler.close()
    assert sampler.replicas == 0
