"""`distill import`: a run from chat data you already have; bad lines are listed with
file:line, never dropped silently; dedupe and split then work on it as on generated data."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from distill.cli import cli
from distill.runs import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
STYLE = ROOT / "seeds" / "greenleaf.style.toml"
TEACHER = ROOT / "benchmarks" / "data" / "greenleaf_teacher.jsonl"


def test_import_checks_every_line_then_dedupe_and_split_work(tmp_path):
    good = TEACHER.read_text().splitlines()[:60]
    data = tmp_path / "mine.jsonl"
    bad = [
        '{"messages": [{"role": "user", "content": "hi"}]}',  # no reply to learn
        "not json",
        "[1, 2]",
        good[0],  # exact duplicate
    ]
    data.write_text("\n".join(good + bad) + "\n")
    run = CliRunner().invoke(cli, ["import", str(data), "--style", str(STYLE)])
    assert run.exit_code == 0, run.output
    assert "imported 60 of 64 lines" in run.output and "4 rejected" in run.output
    out = Path("outputs/mine")
    gen = list(read_jsonl(out / "generated.jsonl"))
    assert len(gen) == 60 and all(r["meta"]["source"] == "import" for r in gen)
    assert gen[0]["messages"] == json.loads(good[0])["messages"]
    reasons = [r["reason"] for r in read_jsonl(out / "rejected.jsonl")]
    assert reasons[0].startswith(f"{data}:61: no-assistant")
    assert reasons[1].startswith(f"{data}:62: invalid-json")
    assert reasons[2].startswith(f"{data}:63: not-object")
    assert reasons[3] == f"{data}:64: exact duplicate of an earlier line"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["style"]["path"] == str(STYLE.resolve())
    assert manifest["stages"]["import"]["kept"] == 60

    # importing again is idempotent: no duplicated rejections
    assert CliRunner().invoke(cli, ["import", str(data), "--style", str(STYLE)]).exit_code == 0
    assert len(list(read_jsonl(out / "rejected.jsonl"))) == 4

    assert CliRunner().invoke(cli, ["dedupe"]).exit_code == 0
    res = CliRunner().invoke(cli, ["split"])
    assert res.exit_code == 0, res.output
    held = list(read_jsonl(out / "eval.jsonl"))
    assert len(held) >= 20 and len(list(read_jsonl(out / "train.jsonl"))) == 60 - len(held)


def test_import_refuses_a_file_with_nothing_valid_and_a_generated_run(tmp_path):
    data = tmp_path / "junk.jsonl"
    data.write_text("nope\n{}\n")
    res = CliRunner().invoke(cli, ["import", str(data)])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "no valid example" in res.output and f"{data}:1: invalid-json" in res.output
    assert not Path("outputs/junk").exists()

    gen = Path("outputs/shop")
    gen.mkdir(parents=True)
    (gen / "manifest.json").write_text(json.dumps({"name": "shop", "config": {"teacher": "x"}}))
    (gen / "generated.jsonl").write_text(TEACHER.read_text().splitlines()[0] + "\n")
    data.write_text(TEACHER.read_text().splitlines()[1] + "\n")
    res = CliRunner().invoke(cli, ["import", str(data), "--name", "shop"])
    assert res.exit_code != 0 and "already holds generated data" in res.output
    assert len((gen / "generated.jsonl").read_text().splitlines()) == 1
    assert not Path("outputs/.current").exists()  # the refused import switched nothing
