"""`distill split`: a held-out set with no near-duplicate of training, stratified, repeatable."""

from __future__ import annotations

import importlib.util
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.cli import cli
from distill.runs import read_jsonl
from distill.stages.dedupe import example_text
from distill.stages.split import SplitConfig, parse_eval_size, split_examples

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."


def _bench():
    spec = importlib.util.spec_from_file_location("bench_dedupe", ROOT / "benchmarks" / "dedupe.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def corpus(n: int = 400, seed: int = 4) -> list[dict]:
    """Support conversations with topics; about a third are light edits of another, so many
    pairs sit above Jaccard 0.5 and a careless split would leak."""
    records, _ = _bench().make_corpus(n, dup_rate=0.35, seed=seed)
    topics = ["late order", "watering", "refund"]
    for r in records:
        r["meta"] = {"topic": topics[int(r["id"][2:]) % 3]}
    return records


def leaks(train: list[dict], held: list[dict], threshold: float = 0.5) -> int:
    """Eval x train pairs at or above threshold, by brute force."""
    bench = _bench()
    texts = [example_text(r["messages"]) for r in train + held]
    n_train = len(train)
    return sum(
        1 for i, j in bench.brute_force_pairs(texts, threshold) if (i < n_train) != (j < n_train)
    )


def test_no_eval_example_is_a_near_duplicate_of_a_training_one():
    records = corpus()
    result = split_examples(records, SplitConfig(eval_size=0.2, seed=3))
    assert len(result.eval) == pytest.approx(80, abs=4)
    assert leaks(result.train, result.eval) == 0
    assert result.report["leakage"]["count_above_threshold"] == 0
    assert result.report["counts"]["groups_with_several_examples"] >= 30
    maxima = result.report["leakage"]["max_jaccard_to_train"]
    assert set(maxima) == {r["id"] for r in result.eval}
    assert all(v is None or v < 0.5 for v in maxima.values())
    # the check is not vacuous: a split that ignores the groups leaks on this corpus
    rng = random.Random(0)
    shuffled = records[:]
    rng.shuffle(shuffled)
    assert leaks(shuffled[80:], shuffled[:80]) > 0


def test_same_seed_same_split_other_seed_other_split():
    records = corpus(200)
    a = split_examples(records, SplitConfig(eval_size=20, seed=1))
    b = split_examples(list(records), SplitConfig(eval_size=20, seed=1))
    c = split_examples(records, SplitConfig(eval_size=20, seed=2))
    assert [r["id"] for r in a.eval] == [r["id"] for r in b.eval]
    assert {r["id"] for r in a.eval} != {r["id"] for r in c.eval}


def test_split_is_stratified_by_topic():
    rng = random.Random(9)
    records = []
    for topic, count in (("late order", 300), ("watering", 100), ("refund", 50)):
        for i in range(count):
            words = " ".join(
                rng.choice(["plant", "order", "box", "leaf", "soil", "pot", "sun"])
                for _ in range(12)
            )
            records.append(
                {
                    "id": f"{topic[:2]}{i}",
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": f"{topic} {i}: {words}"},
                        {"role": "assistant", "content": f"Thanks! Reply {i} {rng.random()}"},
                    ],
                    "meta": {"topic": topic},
                }
            )
    result = split_examples(records, SplitConfig(eval_size=0.1, seed=0))
    counts = Counter(r["meta"]["topic"] for r in result.eval)
    assert counts == {"late order": 30, "watering": 10, "refund": 5}
    assert result.report["strata"]["refund"] == {"total": 50, "eval": 5, "eval_quota": 5}


def test_seeds_stay_in_train():
    records = corpus(100)
    for r in records[:30]:
        r["meta"]["source"] = "seed"
    result = split_examples(records, SplitConfig(eval_size=0.3, seed=0))
    assert not [r for r in result.eval if r["meta"].get("source") == "seed"]
    assert len(result.eval) > 0


def test_seeds_without_topics_do_not_starve_the_eval_split():
    """19 topic-less seeds + 5 generated examples: some of the generated ones are held out,
    instead of a quota assigned to seeds that may never be held out."""
    records = corpus(60)[:24]
    for r in records[:19]:
        r["meta"] = {"source": "seed"}
    result = split_examples(records, SplitConfig(eval_size=0.1, seed=0))
    assert len(result.eval) >= 1
    assert not [r for r in result.eval if r["meta"].get("source") == "seed"]


def test_when_nothing_generated_survives_seeds_are_held_out_with_a_warning():
    records = corpus(60)[:20]
    for r in records:
        r["meta"] = {"source": "seed"}
    result = split_examples(records, SplitConfig(eval_size=0.1, seed=0))
    assert len(result.eval) >= 1 and len(result.train) >= 1
    assert result.report["counts"]["seeds_held_out"] == len(result.eval)
    assert any("seed example(s) held out" in w for w in result.warnings)
    assert result.report["leakage"]["count_above_threshold"] == 0


def test_parse_eval_size():
    assert parse_eval_size("0.1") == 0.1 and parse_eval_size("50") == 50
    for bad in ("0", "1.0", "-3", "ten"):
        with pytest.raises(Exception, match="--eval-size"):
            parse_eval_size(bad)


# -- the command in a run ----------------------------------------------------------------------
def test_split_command_applies_review_and_writes_upload_ready_files(make_run):
    records = corpus(120)
    run = make_run("shop")
    from distill.runs import atomic_write_jsonl

    atomic_write_jsonl(run.file("deduped.jsonl"), records)
    edited = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Edited question about my order?"},
        {"role": "assistant", "content": "Thanks for asking! It ships today."},
    ]
    decisions = [
        {"id": records[0]["id"], "decision": "reject", "reason": "off-brand", "at": "t1"},
        {"id": records[1]["id"], "decision": "reject", "reason": "typo", "at": "t1"},
        {"id": records[1]["id"], "decision": "accept", "at": "t2"},  # last decision wins
        {"id": records[2]["id"], "decision": "edit", "messages": edited, "at": "t3"},
    ]
    atomic_write_jsonl(run.file("review.jsonl"), decisions)

    res = CliRunner().invoke(
        cli, ["split", "--run", str(run.path), "--eval-size", "12", "--seed", "5"]
    )
    assert res.exit_code == 0, res.output
    assert "eval examples with Jaccard >= 0.5 to train: 0" in " ".join(res.output.split())

    train = list(read_jsonl(run.file("train.jsonl")))
    held = list(read_jsonl(run.file("eval.jsonl")))
    assert all(set(r) == {"messages"} for r in train + held)
    assert len(held) == 12 and len(train) + len(held) == 119
    train_ids = [r["id"] for r in read_jsonl(run.file("train_ids.jsonl"))]
    eval_ids = [r["id"] for r in read_jsonl(run.file("eval_ids.jsonl"))]
    by_id = {r["id"]: r for r in records}
    for ids, lines in ((train_ids, train), (eval_ids, held)):
        for i, line in zip(ids, lines, strict=True):
            expected = edited if i == records[2]["id"] else by_id[i]["messages"]
            assert line["messages"] == expected
    assert records[0]["id"] not in train_ids + eval_ids
    assert records[1]["id"] in train_ids + eval_ids
    report = json.loads(run.file("split_report.json").read_text())
    assert report["eval_ids"] == eval_ids and report["train_ids"] == train_ids
    assert report["counts"]["review_rejected"] == 1 and report["counts"]["review_edited"] == 1

    rejected = list(read_jsonl(run.file("rejected.jsonl")))
    assert [(r["id"], r["stage"]) for r in rejected] == [(records[0]["id"], "review")]
    assert "off-brand" in rejected[0]["reason"]
    stage = run.stage("split")
    assert stage["status"] == "done" and stage["train"] == len(train) and stage["leakage"] == 0

    # same seed again: same files, and the review rejection is not listed twice
    before = run.file("eval.jsonl").read_text()
    res = CliRunner().invoke(
        cli, ["split", "--run", str(run.path), "--eval-size", "12", "--seed", "5"]
    )
    assert res.exit_code == 0, res.output
    assert run.file("eval.jsonl").read_text() == before
    assert len(list(read_jsonl(run.file("rejected.jsonl")))) == 1


def test_split_warns_when_a_side_is_below_openai_minimum(make_run):
    from distill.runs import atomic_write_jsonl

    run = make_run("small")
    atomic_write_jsonl(run.file("deduped.jsonl"), corpus(40))
    res = CliRunner().invoke(cli, ["split", "--run", str(run.path), "--eval-size", "0.1"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "warning: eval has 4 example(s); OpenAI fine-tuning needs at least 10" in text


def test_split_without_deduped_says_what_to_run(make_run):
    run = make_run("empty")
    res = CliRunner().invoke(cli, ["split", "--run", str(run.path)])
    assert res.exit_code == 1
    assert res.output.strip().endswith("deduped.jsonl: missing; run `distill dedupe` first")


def test_split_rejects_an_eval_size_that_leaves_no_training(make_run):
    from distill.runs import atomic_write_jsonl

    run = make_run("tiny")
    atomic_write_jsonl(run.file("deduped.jsonl"), corpus(5))
    res = CliRunner().invoke(cli, ["split", "--run", str(run.path), "--eval-size", "5"])
    assert res.exit_code == 2
    assert "leave at least one for training" in res.output


def test_default_eval_size_holds_out_enough_to_conclude(make_run):
    """19 seeds + 70 generated: 10% would hold out 9, too few for eval to conclude; the
    default holds out 20 (a third of the generated examples allows it); a given size is kept."""
    records = corpus(200)[:89]
    for r in records[:19]:
        r["meta"] = {"source": "seed"}
    small = split_examples(records, SplitConfig(eval_size=0.1, seed=0))
    assert len(small.eval) < 20
    floor = split_examples(records, SplitConfig(eval_size=0.1, seed=0, min_eval=20))
    assert len(floor.eval) >= 20
    assert not [r for r in floor.eval if r["meta"].get("source") == "seed"]
    # only a third of what may be held out: 30 generated -> 10
    few = split_examples(records[:49], SplitConfig(eval_size=0.1, seed=0, min_eval=20))
    assert 5 <= len(few.eval) <= 12

    run = make_run("shop")
    from distill.runs import atomic_write_jsonl

    atomic_write_jsonl(run.file("deduped.jsonl"), records)
    res = CliRunner().invoke(cli, ["split", "--run", str(run.path)])
    assert res.exit_code == 0, res.output
    assert len(list(read_jsonl(run.file("eval.jsonl")))) >= 20
    res = CliRunner().invoke(cli, ["split", "--run", str(run.path), "--eval-size", "0.1"])
    assert res.exit_code == 0, res.output
    assert len(list(read_jsonl(run.file("eval.jsonl")))) < 20
