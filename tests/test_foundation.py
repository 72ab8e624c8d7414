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
