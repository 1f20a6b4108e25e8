"""The synthetic task family: determinism, split hygiene, and tests that judge."""
import ast
from collections import Counter

import pytest

from codegen import synthetic
from codegen.errors import UserError
from codegen.synthetic import SPLIT_SIZES, SPLITS, load_split


def _run_check(problem, body: str) -> bool:
    """Trusted in-process check of our own generated code (not candidate code)."""
    ns: dict = {}
    exec(problem.prompt + body, ns)  # noqa: S102
    exec(problem.tests, ns)  # noqa: S102
    try:
        ns["check"](ns[problem.entry_point])
    except AssertionError:
        return False
    return True


@pytest.fixture(scope="module")
def splits():
    return {s: load_split(s) for s in SPLITS}


def test_same_seed_same_problems_other_seed_other_problems(splits):
    again = load_split("heldout", seed=0)
    assert [p.to_dict() for p in again] == [p.to_dict() for p in splits["heldout"]]
    other = load_split("heldout", seed=1)
    assert [p.prompt for p in other] != [p.prompt for p in splits["heldout"]]


def test_load_split_returns_fresh_objects(splits):
    first = load_split("reference")
    first[0].prompt = "mutated"
    first[0].meta["difficulty"] = 99
    assert load_split("reference")[0].prompt != "mutated"
    assert load_split("reference")[0].meta["difficulty"] != 99


def test_split_sizes_and_difficulty_levels(splits):
    for name, problems in splits.items():
        assert len(problems) == SPLIT_SIZES[name]
        levels = Counter(p.meta["difficulty"] for p in problems)
        assert set(levels) == set(synthetic.DIFFICULTY_MIX[name]), name
        assert {p.meta["domain"] for p in problems} == {"ints", "text"}
    # reference is the short end; unlabeled and held-out lean long
    def mean(ps):
        return sum(p.meta["difficulty"] for p in ps) / len(ps)

    assert mean(splits["reference"]) + 0.5 < min(mean(splits["unlabeled"]), mean(splits["heldout"]))


def test_only_reference_exposes_solutions(splits):
    assert all(p.canonical_solution for p in splits["reference"])
    for name in ("unlabeled", "heldout"):
        assert all(p.canonical_solution is None for p in splits[name]), name
        assert all("canonical_solution" not in p.meta for p in splits[name])


def test_ids_unique_and_no_problem_shared_between_splits(splits):
    ids = [p.task_id for ps in splits.values() for p in ps]
    assert len(ids) == len(set(ids))
    # The tests text identifies a problem (pipeline + inputs); no two share it.
    tests = [p.tests for ps in splits.values() for p in ps]
    assert len(tests) == len(set(tests))
    ref_skeletons = {tuple(p.meta["skeleton"]) for p in splits["reference"]}
    assert not any(tuple(p.meta["skeleton"]) in ref_skeletons for p in splits["heldout"])


def test_prompt_is_humaneval_style_with_example(splits):
    for p in splits["heldout"][:20]:
        assert p.prompt.startswith(f"def {p.entry_point}(")
        assert p.prompt.endswith('    """\n')
        assert p.code_prefix == p.prompt
        assert f">>> {p.entry_point}(" in p.prompt
        ast.parse(p.prompt + "    pass\n")
        assert p.tests.startswith("def check(candidate):\n")


def test_canonical_solutions_pass_and_examples_agree(splits):
    for p in splits["reference"]:
        assert _run_check(p, p.canonical_solution), p.task_id
        # the docstring example is what the solution returns
        ns: dict = {}
        exec(p.prompt + p.canonical_solution, ns)  # noqa: S102
        doctest_lines = [line.strip() for line in p.prompt.splitlines()]
        i = next(i for i, line in enumerate(doctest_lines) if line.startswith(">>> "))
        call, shown = doctest_lines[i][4:], doctest_lines[i + 1]
        assert repr(eval(call, ns)) == shown, p.task_id  # noqa: S307


def test_tests_use_plain_data_only(splits):
    for p in splits["heldout"] + splits["unlabeled"]:
        for node in ast.walk(ast.parse(p.tests)):
            if isinstance(node, ast.Compare):
                call = node.left
                assert isinstance(call, ast.Call) and call.func.id == "candidate"
                for value in call.args + node.comparators:
                    ast.literal_eval(value)  # raises on anything but plain literals


def test_tests_reject_wrong_solutions(splits):
    """Dropping any step, or returning the input, fails the tests."""
    for p in splits["reference"]:
        lines = p.canonical_solution.splitlines(keepends=True)
        for i in range(len(lines) - 1):
            assert not _run_check(p, "".join(lines[:i] + lines[i + 1:])), (p.task_id, i)
        arg = "xs" if p.meta["domain"] == "ints" else "s"
        assert not _run_check(p, f"    return {arg}\n"), p.task_id


def test_generalisation_gap_is_designed_in(splits):
    """Every primitive of held-out appears in reference (it can be learned)."""
    seen = {name for p in splits["reference"] for name in p.meta["skeleton"]}
    needed = {name for p in splits["heldout"] for name in p.meta["skeleton"]}
    assert needed <= seen


def test_unknown_split_is_a_clear_error():
    with pytest.raises(UserError, match="heldout"):
        load_split("test")


def test_datasets_spec_loads_synthetic_splits(splits):
    from codegen.datasets import load_problems

    assert [p.task_id for p in load_problems("synthetic:unlabeled")] == [p.task_id for p in splits["unlabeled"]]


def test_real_sandbox_judges_synthetic_problems(splits):
    """Through the real process sandbox: canonical solutions pass, wrong ones fail."""
    from codegen.evaluate import evaluate_samples
    from codegen.samples import Sample

    problems = splits["reference"][:6]
    samples = [Sample(p.task_id, p.canonical_solution, sample_id=f"{p.task_id}#0") for p in problems]
    samples += [Sample(p.task_id, "    return None\n", sample_id=f"{p.task_id}#1") for p in problems]
    results = evaluate_samples(problems, samples, workers=2, cache=False, progress=False)
    by_id = {r["sample_id"]: r for r in results}
    for p in problems:
        assert by_id[f"{p.task_id}#0"]["status"] == "passed", by_id[f"{p.task_id}#0"]
        assert not by_id[f"{p.task_id}#1"]["passed"]


def test_practice_split_is_new_material_never_heldout(splits):
    practice = load_split("practice")
    assert len(practice) == synthetic.PRACTICE_SIZE
    assert [p.task_id for p in practice[:2]] == ["synthetic/practice/0", "synthetic/practice/1"]
    assert all(p.canonical_solution is None and p.meta["split"] == "practice" for p in practice)
    # Unlabeled-style difficulty, and no problem (same tests text) from a fixed split again.
    assert {p.meta["difficulty"] for p in practice} == set(synthetic.DIFFICULTY_MIX["unlabeled"])
    fixed_tests = {p.tests for ps in splits.values() for p in ps}
    fixed_docs = {p.prompt.split(">>>")[0].split("(", 1)[1] for ps in splits.values() for p in ps}
    assert not any(p.tests in fixed_tests for p in practice)
    assert not any(p.prompt.split(">>>")[0].split("(", 1)[1] in fixed_docs for p in practice)
    # Not even a held-out step sequence with other constants.
    heldout_skeletons = {tuple(p.meta["skeleton"]) for p in splits["heldout"]}
    assert not any(tuple(p.meta["skeleton"]) in heldout_skeletons for p in practice)
    # Made on demand from its own random stream: the fixed splits are what they were.
    assert [p.to_dict() for p in load_split("heldout")] == [p.to_dict() for p in splits["heldout"]]


# ------------------------------------------------------------------ the evaluation protocol's splits
def _doc(p) -> str:
    """The problem's signature as its prompt shows it: arguments and docstring steps (constants included)."""
    return p.prompt.split(">>>")[0].split("(", 1)[1]


def _skeletons(problems) -> set:
    return {tuple(p.meta["skeleton"]) for p in problems}


@pytest.fixture(scope="module")
def every_split(splits):
    return {**splits, **{s: load_split(s) for s in ("practice", "validation", "test-fresh")}}


def test_fixed_splits_and_practice_never_change():
    """The splits earlier figures were measured on: adding splits (or speeding up generation) must not move them.

    If the family is changed on purpose, every learning figure must be measured again; then update the hash.
    """
    import hashlib

    h = hashlib.sha256()
    for split in ("reference", "unlabeled", "heldout", "practice"):
        for p in load_split(split):
            h.update(f"{p.task_id}\n{p.prompt}\n{p.tests}\n{p.canonical_solution}\n".encode())
    assert h.hexdigest() == "16f453bfe58bd93211abc72473776280bdf05eef9576ca0817e4700efcf6a64c"


def test_validation_and_fresh_test_sizes_mix_and_ids(every_split):
    validation, fresh = every_split["validation"], every_split["test-fresh"]
    assert len(validation) == synthetic.VALIDATION_SIZE == 200
    assert len(fresh) == len(synthetic.TEST_FRESH_SEEDS) * synthetic.TEST_FRESH_PER_SEED >= 300
    for name, problems in (("validation", validation), ("test-fresh", fresh)):
        assert all(p.canonical_solution is None and p.meta["split"] == name for p in problems)
        assert Counter(p.meta["difficulty"] for p in problems) == Counter(
            {d: round(len(problems) * share) for d, share in synthetic.DIFFICULTY_MIX["heldout"].items()})
    assert [p.task_id for p in validation[:2]] == ["synthetic/validation/0", "synthetic/validation/1"]
    # Other seeds of the family, at least 100 problems each, interleaved; ids name the seed.
    by_seed = Counter(p.meta["family_seed"] for p in fresh)
    assert by_seed == {1: 100, 2: 100, 3: 100}
    assert [p.meta["family_seed"] for p in fresh[:6]] == [1, 2, 3, 1, 2, 3]
    assert all(p.task_id == f"synthetic/test-fresh/s{p.meta['family_seed']}-{p.task_id.rsplit('-', 1)[1]}"
               for p in fresh)


def test_every_split_is_disjoint_by_task_id_and_signature(every_split):
    ids = [p.task_id for ps in every_split.values() for p in ps]
    assert len(ids) == len(set(ids))
    # Signatures: no step sequence with the same constants twice in the whole family (seed 0 and the fresh seeds).
    docs = [_doc(p) for ps in every_split.values() for p in ps]
    assert len(docs) == len(set(docs))
    # Nor can another seed's splits reuse a fresh test id: they name their own splits.
    other_ids = {p.task_id for s in synthetic.SPLITS for p in load_split(s, seed=1)}
    assert not other_ids & {p.task_id for p in every_split["test-fresh"]}


def test_evaluation_splits_are_disjoint_by_skeleton(every_split):
    skel = {name: _skeletons(ps) for name, ps in every_split.items()}
    training = skel["reference"] | skel["unlabeled"] | skel["practice"]
    assert not skel["validation"] & (training | skel["heldout"] | skel["test-fresh"])
    assert not skel["test-fresh"] & (training | skel["heldout"] | skel["validation"])
    assert not skel["heldout"] & skel["reference"]  # held-out as it always was
    # The fresh test set is not one narrow corner of the family: many distinct step sequences.
    assert len(skel["test-fresh"]) >= 280 and len(skel["validation"]) >= 190


def test_evaluation_splits_are_deterministic(every_split):
    """Made again from scratch (caches cleared), the same problems in the same order."""
    synthetic._generate_validation.cache_clear()
    synthetic._generate_test_fresh.cache_clear()
    for name in ("validation", "test-fresh"):
        assert [p.to_dict() for p in load_split(name)] == [p.to_dict() for p in every_split[name]]


def test_datasets_load_the_protocol_splits(every_split):
    from codegen.datasets import SPEC_HELP, load_problems

    assert [p.task_id for p in load_problems("synthetic:test-fresh")][:3] == [
        p.task_id for p in every_split["test-fresh"][:3]]
    assert "synthetic:" in SPEC_HELP and "validation" in SPEC_HELP and "test-fresh" in SPEC_HELP
