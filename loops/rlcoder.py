"""RLCoder: a retriever trained from the generator's perplexity, round after round, against BM25.

The run (`run_rlcoder`), each stage resumable in a `RunDir`:

    round-0/corpus     the repositories of each split (fetched once into the cache, or --repos DIR)
    round-0/tasks      RLCoder-style tasks of each split (codegen.repo.tasks), as JSONL
    round-0/generator  a small Llama trained on the generator split with blocks in its prompts
    round-0/gate       does the generator use context? the target's loss with the most useful
                       block, with none, with a random one (on retriever-training tasks)
    round-k/label      k = 1..rounds: each retriever-training task's candidates (BM25's top
                       bm25_k plus the round k-1 retriever's top retrieve_k) scored by the
                       generator: the weighted loss on the target with that block in the prompt
                       (scores of earlier rounds are reused); the label is the candidate with the
                       lowest loss, or the stop block when none beats no block by stop_margin
                       (label_metric: es instead labels by the first line the generator writes
                       with each block: the most like the target's, or stop when none beats
                       the line it writes without one by more than sim_margin; each line is
                       written once per run, scores.jsonl keeps its similarity for later rounds)
    round-k/retriever  the retriever trained from round k-1's on those labels (cross-entropy
                       over its scores of the candidates and the stop block)
    round-R/evaluate   on the evaluation repositories: exact match and edit similarity of the
                       first generated line for in-file only, BM25, the retriever, the retriever
                       without its stop block, and the oracle block; retrieved tokens; the gate

Re-retrieving with the latest retriever every round is what makes it
iterative: the retriever is labelled on the candidates it would pick itself.
"""
from __future__ import annotations

import json
import math
import random
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

from codegen.hardware import torch_threads
from codegen.io import atomic_path, read_jsonl, write_json_atomic, write_jsonl_atomic
from codegen.repo.corpus import (SPLITS, check_disjoint, check_unseen, fetch_corpus, load_corpus_spec, repos_in,
                                 split_by_name)
from codegen.repo.generator import (builder_for, complete_lines, load_generator, sample_lines, target_losses,
                                    train_generator)
from codegen.repo.retriever import COPY_MATCH, Retriever, copy_match, train_retriever
from codegen.repo.tasks import Task, edit_similarity, exact_match, make_tasks
from loops.rlcoder_config import RESUMABLE_KEYS, RLCoderConfig
from loops.rlcoder_table import ARMS
from loops.rundir import RunDir
from loops.yaml_config import defaults_of

Log = Callable[[str], None]
# The gate passes when the most useful block lowers the mean target loss by more than this (nats): with
# less, the generator hardly reads its context, and what a retriever picks cannot matter.
GATE_MARGIN = 0.1


# --------------------------------------------------------------------------- labels
def label_of(losses: Sequence[float], no_block: float, margin: float = 0.0) -> int:
    """The label of one task: the index of the lowest-loss candidate, or ``len(losses)`` (stop).

    Stop wins when no candidate lowers the loss below ``no_block - margin``:
    then the most useful thing to retrieve is nothing. Ties go to the earlier
    candidate (BM25's order).

    >>> label_of([2.0, 1.5, 1.7], no_block=2.1)
    1
    >>> label_of([2.0, 2.2], no_block=2.01, margin=0.05)
    2
    """
    if not losses:
        return 0
    best = min(range(len(losses)), key=lambda i: (losses[i], i))
    return best if losses[best] < no_block - margin else len(losses)


def label_by_similarity(sims: Sequence[float], no_block: float, losses: Sequence[float], margin: float = 0.0) -> int:
    """The label by what the generator writes: the candidate whose greedy first line is most like the
    target's (edit similarity; the lower loss breaks a tie), or ``len(sims)`` (stop) when none is more
    like it than the line written without a block by more than ``margin`` (`tests/test_rlcoder.py` has
    the cases).
    """
    if not sims:
        return 0
    best = max(range(len(sims)), key=lambda i: (sims[i], -losses[i], -i))
    return best if sims[best] > no_block + margin else len(sims)


def soft_label(sims: Sequence[float], no_block: float, margin: float, temperature: float) -> list[float]:
    """A target distribution over the candidates then stop: softmax of each block's gain in edit similarity
    over the no-block line (stop's is ``margin``), divided by ``temperature``.

    The hard label (`label_by_similarity`) takes the best of a few noisy gains; a block that helps on
    average but wins only some of its tasks rarely gets it. The soft one gives it weight in proportion
    to its gain, so training learns the expected gain of what the features describe.
    """
    logits = [(s - no_block) / temperature for s in sims] + [margin / temperature]
    top = max(logits)
    weights = [math.exp(x - top) for x in logits]
    return [w / sum(weights) for w in weights]


# --------------------------------------------------------------------------- stages
def resolve_repos(cfg: RLCoderConfig, log: Log) -> dict[str, list[str]]:
    """``{split: [repository path]}`` from ``repos`` (a folder) or the corpus file; ``eval_repos`` replaces evaluation."""
    if cfg.repos:
        split = {s: [str(p) for p in ps] for s, ps in split_by_name(repos_in(cfg.repos)).items()}
    else:
        fetched = fetch_corpus(load_corpus_spec(cfg.corpus), cfg.cache, progress=log if cfg.progress else None)
        split = {s: [str(p) for p in ps] for s, ps in fetched.items()}
    if cfg.eval_repos:
        split["evaluation"] = [str(p) for p in repos_in(cfg.eval_repos)]
        check_unseen([Path(p) for p in split["evaluation"]], [Path(p) for p in split["generator"] + split["retriever"]])
    check_disjoint({s: [Path(p) for p in ps] for s, ps in split.items()})
    return split


def corpus_stage(cfg: RLCoderConfig, d: Path, log: Log) -> dict[str, Any]:
    split = resolve_repos(cfg, log)
    write_json_atomic(d / "repos.json", split)
    return {s: len(split[s]) for s in SPLITS}


def tasks_stage(cfg: RLCoderConfig, repos: dict[str, list[str]], d: Path) -> dict[str, Any]:
    per_repo = {"generator": cfg.gen_tasks_per_repo, "retriever": cfg.retriever_tasks_per_repo,
                "evaluation": cfg.eval_tasks_per_repo}
    info = {}
    for split in SPLITS:
        # a seed per split: two splits never share a cut pattern
        tasks = make_tasks(repos[split], per_repo[split], seed=cfg.seed * 10 + SPLITS.index(split),
                           hint=split == "generator", **cfg.task_options())
        write_jsonl_atomic(d / f"{split}.jsonl", [t.to_dict() for t in tasks])
        info[split] = len(tasks)
    return info


def load_tasks(path: Path) -> list[Task]:
    return [Task.from_dict(r) for r in read_jsonl(path)]


class Scorer:
    """The generator and its prompt builder, loaded once; the weighted target loss of block sets."""

    def __init__(self, model_dir: str | Path, device: str = "cpu"):
        self.model, tok = load_generator(model_dir, device)
        info_path = Path(model_dir) / "generator_info.json"
        cfg = json.loads(info_path.read_text())["config"] if info_path.exists() else {}
        self.builder = builder_for(tok, cfg)

    def losses(self, task: Task, block_sets: Sequence[Sequence[dict]]) -> list[float]:
        return target_losses(self.model, self.builder, task, block_sets)

    def complete(self, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
        return complete_lines(self.model, self.builder, prompts, max_new_tokens)

    def sample(self, prompts: list[list[int]], n: int, temperature: float, max_new_tokens: int,
               seed: int) -> list[list[str]]:
        return sample_lines(self.model, self.builder, prompts, n, temperature, max_new_tokens, seed)


def gate_stage(cfg: RLCoderConfig, scorer: Scorer, tasks: Sequence[Task], d: Path, log: Log) -> dict[str, Any]:
    gate, rows = gate_of(scorer, tasks[: cfg.gate_tasks], cfg.seed)
    write_jsonl_atomic(d / "losses.jsonl", rows)
    write_json_atomic(d / "gate.json", gate)
    log(f"gate: best block {gate['best']:.3f}, no block {gate['none']:.3f}, random block {gate['random']:.3f} "
        f"(nats, weighted, {gate['tasks']} tasks)")
    if not gate["passes"]:
        log(f"gate FAILED: the best block lowers the target loss by less than {GATE_MARGIN} nats, so the generator "
            "hardly uses its context and no retriever can help; train it longer (gen_steps) before reading the arms")
    return gate


def gate_of(scorer: Scorer, tasks: Sequence[Task], seed: int) -> tuple[dict[str, Any], list[dict]]:
    """Mean target loss with the most useful block of the pool, none and a random one; per-task losses."""
    rng = random.Random(seed)
    rows = []
    for t in tasks:
        losses = scorer.losses(t, [[]] + [[c] for c in t.candidates])
        rows.append({"task_id": t.task_id, "none": losses[0], "cands": [c["id"] for c in t.candidates],
                     "losses": losses[1:]})
    scored = [r for r in rows if r["losses"]]
    n = max(1, len(scored))
    gate: dict[str, Any] = {
        "tasks": len(scored),
        "best": sum(min(r["losses"]) for r in scored) / n,
        "none": sum(r["none"] for r in scored) / n,
        "random": sum(rng.choice(r["losses"]) for r in scored) / n,
        "best_helps": sum(min(r["losses"]) < r["none"] - 0.1 for r in scored) / n,  # share helped by > 0.1 nats
    }
    gate["passes"] = bool(scored) and gate["best"] < gate["none"] - GATE_MARGIN
    return gate, rows


def _candidates_for_round(task: Task, retriever, bm25_k: int, retrieve_k: int) -> list[dict]:
    """BM25's top ``bm25_k`` then the retriever's top ``retrieve_k`` not already there (pool order kept)."""
    chosen = {c["id"] for c in task.candidates[:bm25_k]}
    if retriever is not None and retrieve_k:
        own = [cid for cid in retriever.rank(task) if cid in {c["id"] for c in task.candidates}]
        chosen |= set(own[:retrieve_k])
    return [c for c in task.candidates if c["id"] in chosen]


def label_stage(cfg: RLCoderConfig, scorer: Scorer, tasks: Sequence[Task], retriever, known: dict[str, dict],
                d: Path, log: Log) -> dict[str, Any]:
    """Score this round's candidates and write labels.jsonl.

    ``known``: ``{task_id: {"losses": {cand id: loss}, "sims": {cand id: edit
    similarity of its line}}}`` from earlier rounds ("" is no block); only what
    is missing is scored (a candidate stays in the pool round after round), and
    ``known`` gains it. scores.jsonl keeps it for the next round.
    """
    rows, scored, written, t0 = [], 0, 0, time.monotonic()
    for i, t in enumerate(tasks):
        cands = _candidates_for_round(t, retriever, cfg.bm25_k, cfg.retrieve_k)
        seen = known.setdefault(t.task_id, {"losses": {}, "sims": {}})
        losses, sims = seen["losses"], seen["sims"]
        todo = [c for c in [None, *cands] if _cid(c) not in losses]
        if todo:
            losses.update(zip(map(_cid, todo), scorer.losses(t, [[c] if c else [] for c in todo])))
            scored += len(todo)
        cand_losses = [losses[c["id"]] for c in cands]
        row = {"task_id": t.task_id, "cands": [c["id"] for c in cands], "losses": cand_losses, "none": losses[""]}
        if cfg.label_metric == "es":
            todo = [c for c in [None, *cands] if _cid(c) not in sims]
            if todo:
                sims.update(zip(map(_cid, todo), line_similarities(cfg, scorer, t, todo)))
                written += len(todo)
            cand_sims = [sims[c["id"]] for c in cands]
            row.update(sims=cand_sims, none_sim=sims[""],
                       label=label_by_similarity(cand_sims, sims[""], cand_losses, cfg.sim_margin))
        else:
            row["label"] = label_of(cand_losses, losses[""], cfg.stop_margin)
        rows.append(row)
        if cfg.progress and (i + 1) % 100 == 0:
            log(f"  labelled {i + 1}/{len(tasks)} tasks ({time.monotonic() - t0:.0f}s)")
    write_jsonl_atomic(d / "labels.jsonl", rows)
    write_jsonl_atomic(d / "scores.jsonl", [{"task_id": k, **v} for k, v in sorted(known.items())])
    stop = sum(r["label"] == len(r["cands"]) for r in rows) / max(1, len(rows))
    not_bm25_top = sum(r["label"] < len(r["cands"]) and r["cands"][r["label"]] != t.candidates[0]["id"]
                       for r, t in zip(rows, tasks)) / max(1, len(rows))
    return {"examples": len(rows), "scored": scored, "lines_written": written, "stop_share": round(stop, 4),
            "label_not_bm25_top": round(not_bm25_top, 4)}


def line_similarities(cfg: RLCoderConfig, scorer: Scorer, task: Task, cands: Sequence[dict | None]) -> list[float]:
    """How like the target's first line the generator writes with each candidate (None: no block) in its prompt.

    The greedy line's edit similarity, or with ``label_samples`` N the mean over N sampled lines: the best
    of a task's candidates by one greedy line is often a block that won by chance; a mean over samples
    weighs what the block does to the generator's whole distribution of lines.
    """
    prompts = [scorer.builder.prompt(task, [c] if c else [])[0] for c in cands]
    if not cfg.label_samples:
        return [edit_similarity(line, task.first_line) for line in scorer.complete(prompts, cfg.max_new_tokens)]
    seed = zlib.crc32(f"{cfg.seed}:{task.task_id}".encode())  # the same lines whatever the order or resume
    sampled = scorer.sample(prompts, cfg.label_samples, cfg.label_sample_temperature, cfg.max_new_tokens, seed)
    return [sum(edit_similarity(line, task.first_line) for line in lines) / len(lines) for lines in sampled]


def _cid(cand: dict | None) -> str:
    """A candidate's key in the score caches; "" is no block."""
    return cand["id"] if cand else ""


def read_known(scores: Path) -> dict[str, dict]:
    """An earlier round's scores.jsonl as `label_stage`'s ``known`` (runs before the sims cache: losses only)."""
    return {r["task_id"]: {"losses": r["losses"], "sims": r.get("sims", {})} for r in read_jsonl(scores)}


def round_retriever(cfg: RLCoderConfig, previous: Path | None, labelling: bool = False):
    """The retriever a round starts from: the previous round's, else a new one.

    For round 1's labels (``labelling``) the new one's ranking picks candidates only when it differs from
    BM25's (``copy_features``: its prior raises near copies); otherwise BM25 alone picks them (None).
    """
    if previous:
        return Retriever.load(previous)
    if labelling and not cfg.copy_features:
        return None
    return Retriever.new(dim=cfg.retriever_dim, query_lines=cfg.query_lines, copy_features=cfg.copy_features,
                         init=cfg.retriever_init, seed=cfg.seed)


def retriever_stage(cfg: RLCoderConfig, tasks: Sequence[Task], labels: list[dict], previous: Path | None, d: Path,
                    round_: int) -> dict[str, Any]:
    retriever = round_retriever(cfg, previous)
    by_id = {t.task_id: t for t in tasks}
    examples = []
    for row in labels:
        t = by_id[row["task_id"]]
        cands = {c["id"]: c for c in t.candidates}
        label = row["label"]
        if cfg.retriever_objective == "gain":  # label_metric es (checked with the config): rows have sims
            label = [s - row["none_sim"] for s in row["sims"]] + [0.0]
        elif cfg.label_temperature > 0:  # the same
            label = soft_label(row["sims"], row["none_sim"], cfg.sim_margin, cfg.label_temperature)
        examples.append((t, [cands[c] for c in row["cands"]], label))
    history = train_retriever(retriever, examples, epochs=cfg.epochs_per_round, lr=cfg.retriever_lr,
                              seed=cfg.seed * 100 + round_, objective=cfg.retriever_objective,
                              features_only=cfg.retriever_train == "features")
    info = {"train_loss": round(history[-1], 4) if history else None, "epochs": len(history)}
    retriever.settings["stop_bias"] = cfg.stop_bias  # what `itercode complete` uses it with
    retriever.save(d / "model", info)
    return info


# --------------------------------------------------------------------------- evaluation
def arm_blocks(arm: str, task: Task, retriever, oracle: dict | None, top_k: int,
               stop_bias: float | None = None) -> list[dict]:
    """The blocks one arm puts in the prompt, most useful last (nearest the cursor).

    ``stop_bias`` is the rlcoder arm's (`Retriever.select`; None: the retriever's own).
    """
    if arm == "infile":
        blocks: list[dict] = []
    elif arm == "bm25":
        blocks = task.candidates[:top_k]
    elif arm == "copy_rule":
        blocks = copy_rule(task)
    elif arm == "rlcoder":
        blocks = retriever.select(task, top_k, use_stop=True, stop_bias=stop_bias)
    elif arm == "rlcoder_no_stop":
        blocks = retriever.select(task, top_k, use_stop=False)
    elif arm == "oracle":
        blocks = [oracle] if oracle else []
    else:
        raise ValueError(f"unknown arm {arm!r}; one of {ARMS}")
    return list(reversed(blocks))


def copy_rule(task: Task) -> list[dict]:
    """The pool's block with the best `copy_match` when it is a near copy (at least COPY_MATCH), else none.

    No learning: what the small generator gains from a block is mostly the line after a copy of the
    context's last line, and a block that holds none only costs in-file context.
    """
    best = max(((copy_match(task.context, c["text"]), -i) for i, c in enumerate(task.candidates)), default=None)
    if best is None or best[0] < COPY_MATCH:
        return []
    return [task.candidates[-best[1]]]  # the best match; of equals, BM25's higher


def score_arm(scorer: Scorer, tasks: Sequence[Task], blocks: Sequence[list[dict]],
              max_new_tokens: int) -> tuple[dict[str, float], list[str], list[int]]:
    """``({"em", "es", "retrieved_tokens"}, first lines, block tokens)`` with ``blocks[i]`` in task i's prompt."""
    prompts, tokens = [], []
    for t, b in zip(tasks, blocks):
        ids, n_block = scorer.builder.prompt(t, b)
        prompts.append(ids)
        tokens.append(n_block)
    preds = scorer.complete(prompts, max_new_tokens)
    n = max(1, len(tasks))
    em = sum(exact_match(p, t.first_line) for p, t in zip(preds, tasks))
    es = sum(edit_similarity(p, t.first_line) for p, t in zip(preds, tasks))
    return ({"em": round(100 * em / n, 2), "es": round(100 * es / n, 2), "retrieved_tokens": round(sum(tokens) / n, 1)},
            preds, tokens)


def evaluate_arms(scorer: Scorer, retriever, tasks: Sequence[Task], *, top_k: int, max_new_tokens: int,
                  seed: int = 0, stop_bias: float | None = None,
                  log: Log | None = None) -> tuple[dict[str, Any], list[dict]]:
    """``({"arms", "gate", "examples"}, per-task rows)``: EM / ES of the first generated line per arm.

    The oracle block is the pool's candidate with the lowest target loss (it
    looks at the target: the ceiling, not a method). ``retrieved_tokens`` is
    the mean number of block tokens in the prompt (after the budget's cut).
    """
    t0 = time.monotonic()
    gate, loss_rows = gate_of(scorer, tasks, seed)
    if log:
        log(f"  evaluate: pools scored ({time.monotonic() - t0:.0f}s)")
    oracle = {}
    for t, r in zip(tasks, loss_rows):
        if r["losses"]:
            oracle[t.task_id] = t.candidates[min(range(len(r["losses"])), key=lambda i: r["losses"][i])]
    arms: dict[str, Any] = {}
    rows = [{"task_id": t.task_id, "target": t.first_line} for t in tasks]
    for arm in ARMS:
        blocks = [arm_blocks(arm, t, retriever, oracle.get(t.task_id), top_k, stop_bias) for t in tasks]
        arms[arm], preds, tokens = score_arm(scorer, tasks, blocks, max_new_tokens)
        for row, p, tok in zip(rows, preds, tokens):
            row[arm] = p
            row[f"{arm}_tokens"] = tok
        if log:
            log(f"  evaluate {arm}: EM {arms[arm]['em']:.1f} ES {arms[arm]['es']:.1f} "
                f"tokens {arms[arm]['retrieved_tokens']:.0f} ({time.monotonic() - t0:.0f}s)")
    gate = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in gate.items()}
    return {"arms": arms, "gate": gate, "examples": len(tasks)}, rows


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's two targets, each met or missed, with the figures."""
    a = result["arms"]
    above = a["rlcoder"]["em"] > a["bm25"]["em"] and a["rlcoder"]["es"] > a["bm25"]["es"]
    stop_ok = (a["rlcoder"]["retrieved_tokens"] < a["rlcoder_no_stop"]["retrieved_tokens"]
               and a["rlcoder"]["em"] >= a["rlcoder_no_stop"]["em"] - 1.0)
    return {"rlcoder_above_bm25": "met" if above else "missed", "stop_saves_tokens": "met" if stop_ok else "missed"}


def evaluate_stage(cfg: RLCoderConfig, scorer: Scorer, retriever_dir: Path, tasks: Sequence[Task], d: Path,
                   log: Log) -> dict[str, Any]:
    result, rows = evaluate_arms(scorer, Retriever.load(retriever_dir), tasks, top_k=cfg.top_k,
                                 max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, stop_bias=cfg.stop_bias, log=log)
    result["targets"] = targets(result)
    write_jsonl_atomic(d / "predictions.jsonl", rows)
    write_json_atomic(d / "eval.json", result)
    return result


# --------------------------------------------------------------------------- the run
def _log(cfg: RLCoderConfig) -> Log:
    def log(msg: str) -> None:
        if cfg.progress:
            print(f"[rlcoder] {msg}", flush=True)
    return log


def run_rlcoder(cfg: RLCoderConfig, log: Log | None = None) -> dict[str, Any]:
    """The whole pipeline in ``cfg.run_dir``; returns the evaluation (eval.json). Resumes a killed run."""
    log = log or _log(cfg)
    # keys added since a run began count as their defaults there (what the run was made with)
    defaults = defaults_of(type(cfg))
    with RunDir.open(cfg.run_dir, cfg.to_dict(), RESUMABLE_KEYS, defaults) as run, torch_threads(cfg.train_threads):
        t_start = time.monotonic()
        run.run_logged(0, "corpus", lambda d: corpus_stage(cfg, d, log), log)
        repos = json.loads((run.stage_dir(0, "corpus") / "repos.json").read_text())
        run.run_logged(0, "tasks", lambda d: tasks_stage(cfg, repos, d), log)
        task_dir = run.stage_dir(0, "tasks")

        def train_gen(d: Path) -> dict[str, Any]:
            return train_generator(d / "model", [Path(p) for p in repos["generator"]],
                                   load_tasks(task_dir / "generator.jsonl"), cfg.generator_config(),
                                   seed=cfg.seed, threads=cfg.train_threads, device=cfg.device, log=log)

        run.run_logged(0, "generator", train_gen, log)
        model_dir = run.stage_dir(0, "generator") / "model"
        scorer = Scorer(model_dir, cfg.device)
        retr_tasks = load_tasks(task_dir / "retriever.jsonl")
        gate = run.run_logged(0, "gate", lambda d: gate_stage(cfg, scorer, retr_tasks, d, log), log)
        rows = [{"round": 0, "stage": "gate", "gate_best": gate.get("best"), "gate_none": gate.get("none"),
                 "gate_random": gate.get("random")}]

        previous: Path | None = None
        for k in range(1, cfg.rounds + 1):
            def label(d: Path, previous=previous, k=k) -> dict[str, Any]:
                retriever = round_retriever(cfg, previous, labelling=True)
                known = read_known(run.stage_dir(k - 1, "label") / "scores.jsonl") if previous else {}
                return label_stage(cfg, scorer, retr_tasks, retriever, known, d, log)

            lab = run.run_logged(k, "label", label, log)
            labels = read_jsonl(run.stage_dir(k, "label") / "labels.jsonl")
            tr = run.run_logged(k, "retriever", lambda d: retriever_stage(cfg, retr_tasks, labels, previous, d, k),
                                log)
            previous = run.stage_dir(k, "retriever") / "model"
            rows.append({"round": k, "stage": "retriever", **lab, **tr})
            run.write_metrics(rows)

        eval_tasks = load_tasks(task_dir / "evaluation.jsonl")
        result = run.run_logged(cfg.rounds, "evaluate",
                                lambda d: evaluate_stage(cfg, scorer, previous, eval_tasks, d, log), log)
        rows.append({"round": cfg.rounds, "stage": "evaluate",
                     **{f"{arm}_{m}": v for arm, r in result["arms"].items() for m, v in r.items()}})
        run.write_metrics(rows)
        _plot(rows, result, run.plot_path)
        log(f"done in {time.monotonic() - t_start:.0f}s this session: {run.root}")
        return result


def _plot(rows: list[dict], result: dict[str, Any], out: Path) -> None:
    """Retriever training per round (loss, stop share) and the arms' EM / ES."""
    import matplotlib  # heavy: only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: after the Agg backend is chosen

    rounds = [r for r in rows if r.get("stage") == "retriever"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    a1.plot([r["round"] for r in rounds], [r.get("train_loss") for r in rounds], marker="o", label="train loss")
    a1.plot([r["round"] for r in rounds], [r.get("stop_share") for r in rounds], marker="s", label="stop labels")
    a1.set_xlabel("round")
    a1.legend()
    a1.set_title("retriever training")
    arms = list(result["arms"])
    x = range(len(arms))
    a2.bar([i - 0.2 for i in x], [result["arms"][a]["em"] for a in arms], width=0.4, label="EM")
    a2.bar([i + 0.2 for i in x], [result["arms"][a]["es"] for a in arms], width=0.4, label="ES")
    a2.set_xticks(list(x), arms, rotation=20)
    a2.set_ylabel("%")
    a2.legend()
    a2.set_title(f"first line, {result['examples']} evaluation tasks")
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def run_artifacts(run_dir: str | Path) -> tuple[Path, Path | None]:
    """``(generator dir, last retriever dir or None)`` of a run (what `itercode complete --run` uses)."""
    run = RunDir.find(str(run_dir))
    model = run.stage_dir(0, "generator") / "model"
    last = last_round(run, "retriever")
    retriever = run.stage_dir(last, "retriever") / "model" if last is not None else None
    return model, retriever


def last_round(run: RunDir, stage: str) -> int | None:
    """The last round in which ``stage`` finished, or None."""
    rounds = [int(k.split("/")[0].split("-")[1]) for k in run.finished_stages() if k.endswith(f"/{stage}")]
    return max(rounds, default=None)

