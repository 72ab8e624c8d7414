"""The preference round on the embedded SmolLM2-135M, through the CLI: pairs from the teacher's
replies against the base's, a DPO round from the SFT adapter, and eval side by side (minutes
of CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds" / "greenleaf.jsonl"
STYLE = ROOT / "seeds" / "greenleaf.style.toml"


def test_pairs_dpo_and_eval_side_by_side_on_the_embedded_model(make_run):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from click.testing import CliRunner

    from distill.cli import cli
    from distill.runs import read_jsonl

    rows = [json.loads(line) for line in SEEDS.read_text().splitlines() if line.strip()]
    run = make_run("greenleaf", train__jsonl=rows, eval__jsonl=rows[:6])
    run.update_manifest(inputs={"style": {"path": str(STYLE)}})

    def cli_ok(*args: str) -> str:
        r = CliRunner().invoke(cli, [*args, "--run", str(run.path)])
        assert r.exit_code == 0, r.output
        return r.output

    cli_ok("train", "--student", "local:smollm2-135m", "--epochs", "1", "--device", "cpu")
    sft = run.manifest["student"]["model"]
    out = cli_ok("pairs", "--student", "local:smollm2-135m")  # the base: it fails the spec
    pairs = list(read_jsonl(run.file("pairs.jsonl")))
    assert len(pairs) >= 10, out
    assert run.stage("pairs")["kept"] == len(pairs)
    cli_ok("train", "--method", "dpo", "--epochs", "1", "--device", "cpu")
    log = run.path / "train" / "local-smollm2-135m-dpo" / "log.jsonl"
    epoch = [json.loads(x) for x in log.read_text().splitlines() if '"lr"' not in x][-1]
    assert epoch["dpo_loss"] < 0.6931  # below log 2: the policy moved toward the chosen
    assert run.manifest["preference"]["reference"] == sft
    text = cli_ok("eval", "--limit", "4", "--probe-size", "4")
    report = json.loads((run.path / "eval" / "local-smollm2-135m-dpo" / "report.json").read_text())
    roles = [c["role"] for c in report["side_by_side"]["models"]]
    assert roles == ["base", "compared", "student"] and "side by side" in text
