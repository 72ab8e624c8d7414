"""`distill export --format hf|parquet|jsonl|openai`: the splits training reads (review decisions
applied), in files other tools load with the right row counts, and a card that says how the
data was made."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner
from conftest import STYLE, greenleaf_example

from distill.cli import cli
from distill.runs import Run, append_jsonl, read_jsonl, sha256_file
from distill.stages import review as rv

WORDS = (
    "monstera fern cactus pothos orchid basil ivy palm succulent bonsai parcel courier box "
    "refund voucher code address invoice subscription gift card soil pot drainage leaf stem "
    "Monday Friday tomorrow tonight morning weekend Berlin Leeds Paris Dublin Madrid"
).split()


def examples(n: int = 30) -> list[dict]:
    out = []
    for i in range(n):
        rng = random.Random(i)
        out.append(
            greenleaf_example(
                "Help with " + " ".join(rng.sample(WORDS, 8)) + "?",
                "Sorry about that! I've sorted the " + " ".join(rng.sample(WORDS, 6)) + ".",
                topic=rng.choice(["plant care", "orders"]),
                persona="busy parent",
                turns=1,
                teacher="openai:gpt-4o",
                source="generate",
            )
        )
    return out


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def reviewed_run(make_run) -> tuple[Run, dict]:
    """A split run where a person rejected one train and one eval example and edited one,
    after split (so train.jsonl still holds them: the export must apply the decisions)."""
    run = make_run("exp", deduped__jsonl=examples())
    run.update_manifest(
        config={"teacher": "openai:gpt-4o"},
        inputs={"style": {"path": str(STYLE), "sha256": sha256_file(STYLE)}},
    )
    append_jsonl(
        run.file("rejected.jsonl"),
        [
            {
                "id": "x1",
                "stage": "generate",
                "reason": "invalid after 3 attempt(s): reply: "
                "no-ai-talk: never talks about being an AI",
            },
            {
                "id": "x2",
                "stage": "generate",
                "reason": "invalid after 2 attempt(s): reply: "
                "no-ai-talk: never talks about being an AI",
            },
            {"id": "x3", "stage": "dedupe", "reason": "near-duplicate of 3f2a (jaccard 0.91)"},
        ],
    )
    r = invoke("split", "--run", str(run.path), "--eval-size", "8")
    assert r.exit_code == 0, r.output
    train = [x["id"] for x in read_jsonl(run.file("train_ids.jsonl"))]
    held = [x["id"] for x in read_jsonl(run.file("eval_ids.jsonl"))]
    original = {e["id"]: e for e in examples()}[train[2]]["messages"]
    edited = [*original[:-1], {"role": "assistant", "content": "Sorry! I've emailed the fix."}]
    rv.record_decision(run, train[0], "reject", "off-brand")
    rv.record_decision(run, held[0], "reject", "wrong facts")
    rv.record_decision(run, train[2], "edit", messages=edited)
    rv.record_decision(run, train[3], "accept")
    facts = {
        "rejected": {train[0], held[0]},
        "edited": (train[2], edited),
        "accepted": train[3],
        "train": len(train) - 1,
        "test": len(held) - 1,
    }
    return run, facts


def test_hf_folder_loads_with_datasets_with_the_review_applied(reviewed_run, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the `datasets` package is not installed")
    run, facts = reviewed_run
    before = run.file("train.jsonl").read_bytes()
    r = invoke("export", "--format", "hf", "--run", str(run.path), "--license", "cc-by-4.0")
    assert r.exit_code == 0, r.output
    folder = run.path / "export" / "hf"
    assert f"exported train {facts['train']}, test {facts['test']} examples" in r.output
    assert run.file("train.jsonl").read_bytes() == before  # export reads, it does not rewrite

    cache = str(tmp_path / "hf-cache")
    both = datasets.load_dataset(str(folder), cache_dir=cache)  # through the card's configs
    plain = datasets.load_dataset("parquet", data_dir=str(folder / "data"), cache_dir=cache)
    for ds in (both, plain):
        assert {s: d.num_rows for s, d in ds.items()} == {
            "train": facts["train"],
            "test": facts["test"],
        }
    rows = {row["id"]: row for s in ("train", "test") for row in both[s]}
    assert not facts["rejected"] & rows.keys()  # a rejected example is never exported
    edited_id, edited = facts["edited"]
    assert rows[edited_id]["messages"][-1]["content"] == edited[-1]["content"]
    assert rows[edited_id]["review"] == "edit"
    assert rows[facts["accepted"]]["review"] == "accept"
    row = rows[facts["accepted"]]
    assert row["persona"] == "busy parent" and row["turns"] == 1
    assert row["teacher"] == "openai:gpt-4o" and row["topic"] in ("plant care", "orders")
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]

    card = (folder / "README.md").read_text()
    header = card.split("---")[1]
    assert 'license: "cc-by-4.0"' in header and "text-generation" in header
    assert f"num_examples: {facts['train']}" in header and 'language:\n- "en"' in header
    assert "generate: invalid after N attempt(s): no-ai-talk: 2" in card
    assert "dedupe: near-duplicate: 1" in card
    assert "review: rejected in review: 2" in card
    assert "Reviewed by a person: 4 decisions (accept 1, edit 1, reject 2)" in card
    assert "Leakage check: 0 test examples with Jaccard >= 0.5" in card


def test_card_counts_are_what_datasets_verifies(reviewed_run, tmp_path):
    """The card's split sizes are checked by `datasets` on load: a wrong count fails it."""
    datasets = pytest.importorskip("datasets", reason="the `datasets` package is not installed")
    run, facts = reviewed_run
    assert invoke("export", "--format", "hf", "--run", str(run.path)).exit_code == 0
    card = run.path / "export" / "hf" / "README.md"
    text = card.read_text()
    card.write_text(text.replace(f"num_examples: {facts['test']}", "num_examples: 99"))
    with pytest.raises(datasets.exceptions.NonMatchingSplitsSizesError):
        datasets.load_dataset(str(card.parent), cache_dir=str(tmp_path / "hf-cache"))


def test_parquet_and_jsonl_keep_id_and_meta(reviewed_run, tmp_path):
    import polars as pl

    run, facts = reviewed_run
    assert invoke("export", "--format", "parquet", "--run", str(run.path)).exit_code == 0
    train = pl.read_parquet(run.path / "export" / "parquet" / "train.parquet")
    test = pl.read_parquet(run.path / "export" / "parquet" / "test.parquet")
    assert (train.height, test.height) == (facts["train"], facts["test"])
    assert train.columns[:2] == ["id", "messages"] and "review" in train.columns
    assert train.schema == test.schema

    out = tmp_path / "as-jsonl"
    assert (
        invoke("export", "--format", "jsonl", "--run", str(run.path), "--out", str(out)).exit_code
        == 0
    )
    rows = list(read_jsonl(out / "train.jsonl"))
    assert len(rows) == facts["train"] and set(rows[0]) == {"id", "meta", "messages"}
    assert not facts["rejected"] & {r["id"] for r in rows}


def test_openai_files_are_upload_ready_with_the_validate_report(reviewed_run):
    run, facts = reviewed_run
    r = invoke("export", "--format", "openai", "--run", str(run.path))
    assert r.exit_code == 0, r.output
    folder = run.path / "export" / "openai"
    lines = [json.loads(x) for x in (folder / "train.jsonl").read_text().splitlines()]
    assert len(lines) == facts["train"] and all(set(x) == {"messages"} for x in lines)
    assert len((folder / "eval.jsonl").read_text().splitlines()) == facts["test"]
    report = json.loads((folder / "validate_report.json").read_text())
    assert (
        report["train.jsonl"]["valid"]
        and report["train.jsonl"]["stats"]["examples"] == facts["train"]
    )
    assert "train.jsonl: valid" in r.output
    assert "eval.jsonl: valid, 1 warnings" in r.output  # 7 held out: fine for a validation file


def test_openai_export_of_an_invalid_split_says_so_and_fails(make_run):
    """Fewer than 10 examples is not uploadable: the report says so and the exit code is 1."""
    run = make_run("small", deduped__jsonl=examples(12))
    assert invoke("split", "--run", str(run.path), "--eval-size", "3").exit_code == 0
    r = invoke("export", "--format", "openai", "--run", str(run.path))
    assert r.exit_code == 1
    assert "train.jsonl: 1 errors" in r.output and "too-few-examples" in r.output


def test_export_refuses_a_folder_that_is_not_an_export_and_replaces_an_earlier_one(
    reviewed_run, tmp_path
):
    run, _ = reviewed_run
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    r = CliRunner().invoke(
        cli, ["export", "--format", "hf", "--run", str(run.path), "--out", str(mine)]
    )
    assert r.exit_code == 2 and "is not an earlier `distill export`" in r.output
    assert (mine / "notes.txt").read_text() == "keep me"
    assert "Traceback" not in r.output
    (run.path / "export" / ".parquet.killed").mkdir(parents=True)  # an export killed midway
    for _ in range(2):  # a second export replaces the first whole
        assert invoke("export", "--format", "parquet", "--run", str(run.path)).exit_code == 0
    folder = run.path / "export" / "parquet"
    assert sorted(p.name for p in folder.iterdir()) == [
        "export.json",
        "test.parquet",
        "train.parquet",
    ]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_export_before_split_is_one_line(make_run):
    run = make_run("early", generated__jsonl=examples(3))
    r = CliRunner().invoke(cli, ["export", "--format", "hf", "--run", str(run.path)])
    assert r.exit_code == 1
    assert (
        r.output.strip() == f"Error: {run.file('train.jsonl')}: missing; run `distill split` first"
    )
