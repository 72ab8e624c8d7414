"""`distill run`: the whole pipeline from seeds to report, with a loopback OpenAI-compatible
teacher and a tiny local student; a rerun skips every stage that is current."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SEEDS, STYLE

ROOT = Path(__file__).resolve().parent.parent

WORDS = (
    "monstera fern cactus pothos orchid basil ivy palm succulent bonsai parcel courier box "
    "refund voucher code address invoice subscription gift card soil pot drainage leaf stem "
    "Monday Friday tomorrow tonight morning weekend Berlin Leeds Paris Dublin Madrid"
).split()


def _varied(seed: str, k: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.sample(WORDS, k))


def _responder(body: dict) -> str:
    """A teacher that writes on-voice, mutually different conversations for any plan point."""
    from fake_openai_server import request_schema, schema_instance
    from test_generate import good_answer

    schema = request_schema(body) or {}
    if "exchanges" in json.dumps(schema):
        answer = good_answer(body["messages"])
        key = json.dumps(body["messages"])
        for i, ex in enumerate(answer["exchanges"]):
            ex["user"] += " " + _varied(f"u{i}{key}", 8)
            ex["assistant"] = (
                f"Thanks for asking! I've sorted the {_varied(f'a{i}{key}', 6)}; "
                "you'll get an email within the hour."
            )
        return json.dumps(answer)
    if schema:
        return json.dumps(schema_instance(schema))
    return "So sorry about that! I've sorted it and you'll hear from us within the hour."


def _distill(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distill", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def pipeline_env(tmp_path: Path, key: str) -> dict:
    """A folder with seeds/greenleaf.{jsonl,style.toml} and the environment of a `distill`
    subprocess that writes to tmp_path/outputs with `key` as its OpenAI key."""
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "greenleaf.jsonl").write_text(SEEDS.read_text())
    (seeds / "greenleaf.style.toml").write_text(STYLE.read_text())
    return {
        **os.environ,
        "OPENAI_API_KEY": key,
        "DISTILL_OUTPUTS": str(tmp_path / "outputs"),
        "DISTILL_CACHE": str(tmp_path / "cache"),
    }


def test_run_end_to_end_then_rerun_skips_current_stages(tmp_path, tiny_model_dir):
    from fake_openai_server import FakeOpenAIServer

    env = pipeline_env(tmp_path, "sk-test-e2e")
    out = tmp_path / "outputs"
    with FakeOpenAIServer(_responder) as server:
        args = [
            "run",
            "--seeds",
            "seeds/greenleaf.jsonl",
            "--teacher",
            "openai:gpt-4o-mini",
            "--base-url",
            server.url,
            "--student",
            f"local:{tiny_model_dir}",
            "--n",
            "30",
            "--epochs",
            "2",
        ]
        first = _distill(args, env, tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        run = out / "greenleaf"
        for name in ("generated.jsonl", "deduped.jsonl", "train.jsonl", "eval.jsonl"):
            assert (run / name).stat().st_size > 0, name
        reports = list(run.glob("eval/*/report.html"))
        assert reports and f"Report: {reports[0]}" in first.stdout
        assert "Next: distill" not in first.stdout  # the stages' own hints belong to them
        manifest = json.loads((run / "manifest.json").read_text())
        assert {"generate", "dedupe", "split", "train", "eval"} <= set(manifest["stages"])
        calls_before = server.counts["requests"]

        second = _distill(args, env, tmp_path)
        assert second.returncode == 0, second.stderr[-3000:]
        assert second.stderr.count("up to date, skipped") == 5
        assert server.counts["requests"] == calls_before  # nothing re-sent

    assert "sk-test-e2e" not in first.stdout + first.stderr
    for f in run.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".jsonl", ".html", ".txt"):
            assert "sk-test-e2e" not in f.read_text(errors="ignore"), f


def test_run_with_missing_seeds_is_one_line(tmp_path):
    r = _distill(["run", "--seeds", "nope.jsonl"], dict(os.environ), tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "nope.jsonl" in r.stderr


@pytest.mark.slow
def test_embedded_demo_shows_the_student_learning_the_voice(tmp_path):
    """`make demo`'s own command (read from the Makefile), offline: at least 20 held-out
    examples, the student beats the base on style by 25+ points with the interval above 0, and
    the probe shows no conclusive forgetting of 5+ points. Minutes of CPU."""
    import shlex

    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if "distill run" in x)
    args = shlex.split(line.split("distill", 1)[1])
    for name in ("greenleaf.jsonl", "greenleaf.style.toml", "greenleaf.prompts.jsonl"):
        (tmp_path / "seeds").mkdir(exist_ok=True)
        (tmp_path / "seeds" / name).write_text((ROOT / "seeds" / name).read_text())
    env = {**os.environ, "DISTILL_OUTPUTS": str(tmp_path / "outputs")}
    env.pop("OPENAI_API_KEY", None)
    r = _distill(args, env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Report:" in r.stdout and "Distillation worked" in r.stdout
    report = json.loads(next((tmp_path / "outputs").glob("*/eval/*/report.json")).read_text())
    assert report["examples"] >= 20
    style = report["metrics"]["style"]["diff"]
    assert style["mean"] >= 0.25 and style["lo"] > 0, style
    drop = report["metrics"]["probe"]["drop"]
    assert drop["mean"] < 0.05 or drop["lo"] <= 0, drop
