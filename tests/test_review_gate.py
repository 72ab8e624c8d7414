"""The human gate: whatever order the commands run in, nothing a person rejected is trained on
or uploaded, edits are trained as edited, and --require-review looks at what is trained on."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import greenleaf_example
from openai_mock import ScriptedOpenAI

from distill.cli import cli
from distill.records import Example
from distill.runs import Run, atomic_write_json, atomic_write_jsonl, read_jsonl
from distill.stages import review as rv
from distill.stages import review_gate
from distill.stages.pipeline import STAGES, fingerprint

KEY = "sk-test-gate-0123456789"
WORDS = (
    "monstera fern cactus pothos orchid basil ivy palm succulent bonsai parcel courier box "
    "refund voucher code address invoice subscription gift card soil pot drainage leaf stem "
    "Monday Friday tomorrow tonight morning weekend Berlin Leeds Paris Dublin Madrid"
).split()


def examples(n: int = 30) -> list[dict]:
    """n examples different enough that split can hold some out."""
    out = []
    for i in range(n):
        rng = random.Random(i)
        out.append(
            greenleaf_example(
                "Help with " + " ".join(rng.sample(WORDS, 8)) + "?",
                "Sorry about that! I've sorted the " + " ".join(rng.sample(WORDS, 6)) + ".",
                topic="plant care",
            )
        )
    return out


@pytest.fixture
def split_run(make_run) -> Run:
    """A run that went generate -> dedupe -> split, before anyone reviewed it."""
    run = make_run("gate", deduped__jsonl=examples())
    r = CliRunner().invoke(cli, ["split", "--run", str(run.path), "--eval-size", "8"])
    assert r.exit_code == 0, r.output
    return run


def ids(run: Run, name: str) -> list[str]:
    return [r["id"] for r in read_jsonl(run.file(f"{name}_ids.jsonl"))]


def lines(run: Run, name: str) -> list[list[dict]]:
    return [r["messages"] for r in read_jsonl(run.file(f"{name}.jsonl"))]


def edit_of(messages: list[dict]) -> list[dict]:
    return [*messages[:-1], {"role": "assistant", "content": "Sorry! I've emailed the fix."}]


def by_id() -> dict[str, dict]:
    return {r["id"]: r for r in examples()}


@pytest.fixture
def captured(monkeypatch):
    """Replace local training with a recorder of what it would train and validate on."""
    seen: list[dict] = []

    def fake_train_local(run: Run, name: str, **opts):
        seen.append({"name": name, "train": lines(run, "train"), "eval": lines(run, "eval")})
        return {}

    import distill.stages.train_local

    monkeypatch.setattr(distill.stages.train_local, "train_local", fake_train_local)
    return seen


def train(run: Run, *args: str):
    return CliRunner().invoke(cli, ["train", "--run", str(run.path), *args])


def test_split_then_review_then_train_trains_on_the_decisions(split_run, captured):
    """The README's order: split, review, train."""
    run = split_run
    train_ids, eval_ids = ids(run, "train"), ids(run, "eval")
    originals = by_id()
    rv.record_decision(run, train_ids[0], "reject", "off-brand")
    rv.record_decision(run, eval_ids[0], "reject", "wrong facts")
    rv.record_decision(
        run, train_ids[1], "edit", messages=edit_of(originals[train_ids[1]]["messages"])
    )
    rv.record_decision(run, train_ids[2], "accept")

    r = train(run, "--student", "local:tiny")
    assert r.exit_code == 0, r.output
    assert "dropped 2 rejected, applied 1 edits" in r.stderr
    [seen] = captured
    trained = seen["train"] + seen["eval"]
    assert originals[train_ids[0]]["messages"] not in trained
    assert originals[eval_ids[0]]["messages"] not in trained
    assert edit_of(originals[train_ids[1]]["messages"]) in seen["train"]
    assert originals[train_ids[1]]["messages"] not in trained
    assert len(seen["train"]) == len(train_ids) - 1 and len(seen["eval"]) == len(eval_ids) - 1

    rejected = [r for r in read_jsonl(run.file("rejected.jsonl")) if r["stage"] == "review"]
    assert sorted(r["id"] for r in rejected) == sorted([train_ids[0], eval_ids[0]])
    assert any("off-brand" in r["reason"] for r in rejected)
    report = json.loads(run.file("split_report.json").read_text())
    assert report["counts"]["review_rejected"] == 2 and report["counts"]["review_edited"] == 1
    assert report["counts"]["train"] == len(train_ids) - 1
    assert train_ids[0] not in report["train_ids"] and eval_ids[0] not in report["eval_ids"]
    assert run.stage("split")["review_rejected"] == 2

    # training again changes nothing and lists no rejection twice
    before = run.file("train.jsonl").read_text()
    r = train(run, "--student", "local:tiny")
    assert r.exit_code == 0, r.output
    assert run.file("train.jsonl").read_text() == before
    assert len([r for r in read_jsonl(run.file("rejected.jsonl"))]) == 2


def test_a_hosted_fine_tune_never_uploads_a_rejected_example(split_run, monkeypatch):
    run = split_run
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("DISTILL_POLL_INTERVAL", "0.005")
    monkeypatch.setenv("DISTILL_POLL_MAX", "0.02")
    train_ids, eval_ids = ids(run, "train"), ids(run, "eval")
    originals = by_id()
    rv.record_decision(run, train_ids[3], "reject", "rude")
    rv.record_decision(run, eval_ids[1], "reject", "rude")
    rv.record_decision(
        run, train_ids[4], "edit", messages=edit_of(originals[train_ids[4]]["messages"])
    )
    with ScriptedOpenAI(KEY) as server:
        r = train(run, "--student", "gpt-4o-mini", "--base-url", server.url, "--yes")
        assert r.exit_code == 0, r.output
        uploaded = b"".join(server.contents.values()).decode()
    for rid in (train_ids[3], eval_ids[1], train_ids[4]):
        reply = originals[rid]["messages"][-1]["content"]
        assert json.dumps(reply)[1:-1] not in uploaded, rid
    assert "I've emailed the fix." in uploaded


def test_an_undone_edit_trains_the_original_again(split_run, captured):
    run = split_run
    first = ids(run, "train")[0]
    original = by_id()[first]["messages"]
    rv.record_decision(run, first, "edit", messages=edit_of(original))
    assert train(run, "--student", "local:tiny").exit_code == 0
    assert lines(run, "train")[0] == edit_of(original)
    rv.record_decision(run, first, "accept")  # the later decision wins: the original is back
    r = train(run, "--student", "local:tiny")
    assert r.exit_code == 0, r.output
    assert captured[-1]["train"][0] == original


def test_a_kill_between_the_ids_and_the_lines_is_completed_next_time(split_run):
    run = split_run
    train_ids = ids(run, "train")
    rv.record_decision(run, train_ids[5], "reject", "dull")
    # what a kill right after the ids file was rewritten leaves: ids without the rejected
    # example, train.jsonl still with it
    kept = [r for r in read_jsonl(run.file("train_ids.jsonl")) if r["id"] != train_ids[5]]
    atomic_write_jsonl(run.file("train_ids.jsonl"), kept)
    gate = review_gate.apply_review_gate(run)
    assert gate is not None and gate.changed
    originals = by_id()
    assert lines(run, "train") == [originals[i]["messages"] for i in ids(run, "train")]
    assert train_ids[5] not in ids(run, "train") and len(ids(run, "train")) == len(train_ids) - 1


def test_require_review_counts_what_is_trained_on(split_run, captured):
    run = split_run
    # dedupe ran again after split (fewer examples): every example under review is decided,
    # but train.jsonl still holds examples nobody looked at
    decided = examples()[:20]
    atomic_write_jsonl(run.file("deduped.jsonl"), decided)
    for rec in decided:
        rv.record_decision(run, rec["id"], "accept")
    assert rv.unreviewed_count(run) == 0
    r = train(run, "--student", "local:tiny", "--require-review")
    assert r.exit_code == 1
    in_files = set(ids(run, "train") + ids(run, "eval"))
    left = len(in_files - {rec["id"] for rec in decided})
    assert f"{left} of the {len(in_files)} examples in train.jsonl and eval.jsonl" in r.output
    assert "distill review" in r.output and len(r.output.strip().splitlines()) == 1
    assert captured == []
    for rid in in_files:
        rv.record_decision(run, rid, "accept")
    assert train(run, "--student", "local:tiny", "--require-review").exit_code == 0
    assert len(captured) == 1


def test_decisions_without_the_ids_files_refuse_and_name_split(split_run, captured):
    run = split_run
    run.file("train_ids.jsonl").unlink()
    rv.record_decision(run, examples()[0]["id"], "reject")
    r = train(run, "--student", "local:tiny")
    assert r.exit_code == 1 and "distill split" in r.output and captured == []


def test_status_shows_decisions_train_jsonl_does_not_follow(split_run, captured):
    run = split_run
    status = CliRunner().invoke(cli, ["status", "--run", str(run.path)])
    assert "not applied yet" not in status.output
    rv.record_decision(run, ids(run, "train")[0], "reject", "dull")
    status = CliRunner().invoke(cli, ["status", "--run", str(run.path)])
    assert status.exit_code == 0, status.output
    text = " ".join(status.output.split())
    assert "1 rejected and 0 edited examples are not applied yet" in text
    assert "distill train" in text
    as_json = CliRunner().invoke(cli, ["status", "--run", str(run.path), "--format", "json"])
    assert "not applied yet" in json.loads(as_json.output)["review_pending"]
    assert train(run, "--student", "local:tiny").exit_code == 0
    status = CliRunner().invoke(cli, ["status", "--run", str(run.path)])
    assert "not applied yet" not in status.output


def test_run_retrains_when_review_jsonl_changes(split_run):
    run = split_run
    stage = next(s for s in STAGES if s.name == "train")
    before = fingerprint(run, stage, {}, [])
    rv.record_decision(run, ids(run, "train")[0], "accept")  # changes no line of train.jsonl
    assert fingerprint(run, stage, {}, []) != before


# -- review --list reads only ---------------------------------------------------------------
def test_review_list_and_export_mark_nothing(split_run, tmp_path):
    run = split_run
    before = run.manifest
    assert CliRunner().invoke(cli, ["review", "--run", str(run.path), "--list"]).exit_code == 0
    out = tmp_path / "r.html"
    r = CliRunner().invoke(cli, ["review", "--run", str(run.path), "--export", str(out)])
    assert r.exit_code == 0 and out.exists()
    assert run.manifest == before and "review" not in run.manifest["stages"]


def test_review_list_into_head_exits_quietly(make_run, tmp_path):
    # more lines than a pipe holds, so the writer meets the closed pipe for sure
    many = [
        Example(
            messages=[
                {"role": "user", "content": f"q {i}"},
                {"role": "assistant", "content": f"a {i}"},
            ]
        ).to_record()
        for i in range(6000)
    ]
    run = make_run("many", many)
    atomic_write_json(run.file("dedupe_report.json"), {"clusters": []})
    r = subprocess.run(
        [
            "bash",
            "-c",
            f"set -o pipefail; '{sys.executable}' -m distill review --run '{run.path}' --list | head -1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and r.stdout.startswith(many[0]["id"])
    assert r.stderr == ""
