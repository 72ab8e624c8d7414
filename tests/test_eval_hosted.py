"""`distill eval` against served models: a hosted fine-tune id (OpenAI-compatible API via
--base-url) and Ollama, both played by a loopback server started here."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import STYLE, greenleaf_example
from fake_openai_server import FakeOpenAIServer

from distill.cli import cli

STUDENT_ID = "ft:gpt-4o-mini-2024-07-18:acme:greenleaf:abc123"
SECRET = "sk-test-do-not-write-me"


def responder(body):
    if body.get("tools") or body.get("response_format") or body.get("format"):
        return json.dumps({"reason": "A reads better", "winner": "A"})  # a position-biased judge
    model = body["model"]
    if model in (STUDENT_ID, "greenleaf"):
        return "So sorry about that! I've checked and it ships today."
    return "Your order is in transit."


@pytest.fixture
def served_run(make_run):
    run = make_run(
        "served",
        eval__jsonl=[
            greenleaf_example("My order is late.", "So sorry for the wait! I've flagged it."),
            greenleaf_example("Where is my plant?", "Sorry! I'll check the tracking now."),
        ],
    )
    run.update_manifest(
        student={"model": f"openai:{STUDENT_ID}", "base": "openai:gpt-4o-mini-2024-07-18"},
        config={"teacher": "openai:gpt-4o"},
        inputs={"style": {"path": str(STYLE)}},
    )
    return run


@pytest.fixture(autouse=True)
def _no_embedder(monkeypatch):
    from distill.stages import evaluate as ev

    monkeypatch.setattr(ev, "load_embedder", lambda: (None, "not in this test"))
    monkeypatch.setattr(
        ev,
        "load_probe",
        lambda path=None: [{"id": "p", "prompt": "Capital of France?", "answer": "Paris"}],
    )


def test_hosted_student_base_and_judge_through_base_url(served_run, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAIServer(responder=responder) as server:
        args = ["eval", "--run", str(served_run.path), "--base-url", server.url]
        r = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        sent = server.counts["requests"]
        models = {b["model"] for b in server.bodies}
        r2 = CliRunner().invoke(cli, args)
        assert r2.exit_code == 0, r2.output
        again = server.counts["requests"]
    assert models == {STUDENT_ID, "gpt-4o-mini-2024-07-18", "gpt-4o"}
    assert sent == 2 * 2 + 2 * 1 + 2 * 2  # replies, probe, judge in both orders
    assert again == sent  # the rerun came from calls.sqlite
    report = json.loads(
        (
            served_run.path / "eval" / f"openai-{STUDENT_ID.replace(':', '-')}" / "report.json"
        ).read_text()
    )
    m = report["metrics"]
    assert (m["style"]["student"]["mean"], m["style"]["base"]["mean"]) == (1.0, 0.0)
    # the judge always says "A": each pair is one win and one loss, never consistent
    assert m["win_rate"]["student"]["mean"] == 0.5
    assert m["win_rate"]["order_consistent"] == 0.0
    assert "student passes style 100% vs base 0%" in r.output
    for f in served_run.path.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_ollama_student(served_run, monkeypatch):
    with FakeOpenAIServer(responder=responder) as server:
        monkeypatch.setenv("OLLAMA_HOST", server.root)
        r = CliRunner().invoke(
            cli,
            [
                "eval",
                "--run",
                str(served_run.path),
                "--student",
                "ollama:greenleaf",
                "--base",
                "ollama:smollm2:135m",
                "--judge",
                "none",
            ],
            env={"COLUMNS": "200"},
        )
    assert r.exit_code == 0, r.output
    report = json.loads((served_run.path / "eval" / "ollama-greenleaf" / "report.json").read_text())
    assert report["metrics"]["style"]["student"]["mean"] == 1.0
    assert report["metrics"]["probe"]["student"]["n"] == 1


def test_hosted_loss_gap_comes_from_the_downloaded_step_metrics(served_run, monkeypatch):
    """`distill train` saves OpenAI's result CSV beside job.json; eval reads the final train
    and validation loss of the job that made the student."""
    folder = served_run.path / "train" / "gpt-4o-mini-2024-07-18"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({"fine_tuned_model": STUDENT_ID}))
    (folder / "step_metrics.csv").write_text(
        "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,full_valid_loss\n"
        "1,2.5,0.4,2.75,0.4,\n"
        "2,1.5,0.6,,,\n"
        "3,1.0,0.7,2.0,0.6,2.25\n"
    )
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAIServer(responder=responder) as server:
        args = ["eval", "--run", str(served_run.path), "--base-url", server.url, "--judge", "none"]
        r = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    report = json.loads(
        (
            served_run.path / "eval" / f"openai-{STUDENT_ID.replace(':', '-')}" / "report.json"
        ).read_text()
    )
    loss = report["metrics"]["loss"]
    assert (loss["train_loss"], loss["eval_loss"], loss["best_eval_loss"]) == (1.0, 2.25, 2.25)
    assert loss["gap"] == 1.25
