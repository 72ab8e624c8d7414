"""`distill improve`: the cells ranked from the last eval, the plan weighted toward the weakest,
new examples added to train only (the eval set frozen), the round resumable after SIGKILL and
recorded in the manifest, split keeping the additions in train."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import SEEDS, STYLE, sigkill_midway

from distill.stages.generate.plan import PlanPoint
from distill.stages.improve.cells import Cell, rank_cells
from distill.stages.improve.fresh import keep_fresh
from distill.stages.improve.planning import targeted, uniform


def _row(topic: str, ok: bool, **meta) -> dict:
    return {
        "kind": "example",
        "id": f"{topic}-{ok}",
        "meta": {"topic": topic, **meta},
        "student": {"text": "x", "style_pass": ok},
    }


def _cell(value: str, priority: float) -> Cell:
    return Cell("topic", value, 1, 1, 0, priority, {})


# -- ranking ------------------------------------------------------------------------------
def test_cells_rank_failures_first_and_thin_training_above_thick():
    rows = (
        [_row("refunds", False)] * 3
        + [_row("refunds", True)]
        + [_row("repotting", False), _row("repotting", True)]
        + [_row("watering", True)] * 4
        + [_row("pests", False), _row("pests", True)]
    )
    train = Counter({"refunds": 10, "repotting": 4, "watering": 10, "pests": 30})
    cells = rank_cells(rows, train, "topic")
    order = [c.value for c in cells]
    # 3 of 4 failed beats 1 of 2; with the same failure rate, 4 in train beats 30 in train
    assert order == ["refunds", "repotting", "pests", "watering"]
    refunds = cells[0]
    assert (refunds.held_out, refunds.failed, refunds.train) == (4, 3, 10)
    assert refunds.pass_rate["mean"] == pytest.approx(0.25)
    # a cell with no failures still ranks (by the prior), but lowest
    assert 0 < cells[-1].priority < cells[-2].priority


def test_one_failure_in_one_example_ranks_below_many_in_many():
    rows = [_row("a", False)] + [_row("b", False)] * 5 + [_row("c", True)] * 4
    cells = rank_cells(rows, Counter({"a": 5, "b": 5, "c": 5}), "topic")
    assert [c.value for c in cells][:2] == ["b", "a"]


# -- planning -----------------------------------------------------------------------------
def _points(per_topic: dict[str, int]) -> list[PlanPoint]:
    out = []
    for topic, k in per_topic.items():
        out += [PlanPoint(0, topic, "p", "i", 1, prompt=len(out) + j) for j in range(k)]
    return out


def test_targeted_plan_follows_the_priorities_and_skips_other_cells():
    pool = _points({"a": 50, "b": 50, "c": 50})
    plan = targeted(pool, [_cell("a", 0.6), _cell("b", 0.3)], 30)
    counts = Counter(p.topic for p in plan)
    assert counts == {"a": 20, "b": 10}  # 2:1 as the priorities, nothing from c
    assert [p.plan_index for p in plan] == list(range(30))
    assert len({p.prompt for p in plan}) == 30  # no customer message twice
    # the first n follow the weights too (the rest replace rejected points the same way)
    assert Counter(p.topic for p in plan[:9]) == {"a": 6, "b": 3}


def test_targeted_plan_moves_on_when_a_cell_runs_out():
    pool = _points({"a": 2, "b": 50})
    plan = targeted(pool, [_cell("a", 0.9), _cell("b", 0.1)], 10)
    assert Counter(p.topic for p in plan) == {"a": 2, "b": 8}
    control = uniform(pool, 5)  # the control takes candidates as they come, any cell
    assert [p.prompt for p in control] == [q.prompt for q in pool[:5]]
    # with plan indices of its own, so a point both branches take is sampled anew
    assert {p.plan_index for p in control}.isdisjoint(range(len(plan)))


# -- what is new to the run -----------------------------------------------------------------
def test_new_examples_close_to_held_out_or_known_ones_are_rejected_with_the_reason(make_run):
    from conftest import greenleaf_example

    held = greenleaf_example(
        "My monstera arrived with a cracked pot and soil everywhere, order GL-1234.",
        "So sorry about the cracked pot! I've sent a replacement; it ships tomorrow.",
    )
    known = greenleaf_example(
        "Can I change the delivery address on order GL-777 to my office in Leeds?",
        "Of course! I've updated the address to your office; it arrives Friday.",
    )
    run = make_run(
        "fresh",
        deduped__jsonl=[known],
        eval__jsonl=[{"messages": held["messages"]}],
        eval_ids__jsonl=[{"id": held["id"], "meta": {}}],
    )
    leak = greenleaf_example(
        "My monstera arrived with a cracked pot and soil everywhere, order GL-1235.",
        "So sorry about the cracked pot! I've sent a replacement; it ships tomorrow.",
    )
    twin = greenleaf_example(
        "Can I change the delivery address on order GL-778 to my office in Leeds?",
        "Of course! I've updated the address to your office; it arrives Friday.",
    )
    new = greenleaf_example(
        "Do you ship succulents to Dublin, and how are they packed for the cold?",
        "We do! Succulents travel in insulated boxes; order by Wednesday for Friday delivery.",
    )
    kept, rejected = keep_fresh(run, [leak, twin, new, dict(new)], seeds=None, threshold=0.8)
    assert [r["id"] for r in kept] == [new["id"]]
    reasons = {rec["id"]: why for rec, _, why in rejected}
    assert "held-out example" in reasons[leak["id"]] and "leak" in reasons[leak["id"]]
    assert f"near-duplicate of {known['id']}" in reasons[twin["id"]]
    assert len(rejected) == 3 and "exact copy" in rejected[-1][2]


# -- the whole round from the CLI -----------------------------------------------------------
def _distill(args: list[str], env: dict, cwd: Path):
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "distill", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _answered_calls(db: Path) -> list[tuple[str, object]]:
    """(messages key, seed) of every answered call in a calls.sqlite."""
    import sqlite3

    from fake_openai_server import messages_key

    con = sqlite3.connect(db)
    rows = [
        json.loads(r[0])
        for r in con.execute("SELECT request FROM calls WHERE response IS NOT NULL")
    ]
    con.close()
    return [(messages_key(r["messages"]), r.get("seed")) for r in rows]


def _server_answers(server) -> Counter:
    """How many times the server answered each teacher request (the conversations asked for,
    not the judge's verdicts), by (messages key, seed)."""
    from fake_openai_server import body_key, messages_key, request_schema

    out: Counter = Counter()
    for key, body in {body_key(b): b for b in server.bodies}.items():
        if "exchanges" in json.dumps(request_schema(body)):
            out[(messages_key(body["messages"]), body.get("seed"))] += server.finished[key]
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_improve_round_from_the_cli_killed_then_resumed(tmp_path, tiny_model_dir):
    """distill run, then distill improve --control killed mid-generation and rerun: the eval
    set is the same bytes, the additions are in train only (and survive a new split), the
    round is in the manifest, and no finished teacher call was sent twice."""
    from fake_openai_server import FakeOpenAIServer
    from test_run import _responder, pipeline_env

    env = pipeline_env(tmp_path, "sk-test-improve")
    out = tmp_path / "outputs"

    def run_args(url: str) -> list[str]:
        return [
            "run", "--seeds", "seeds/greenleaf.jsonl", "--teacher", "openai:gpt-4o-mini",
            "--base-url", url, "--student", f"local:{tiny_model_dir}", "--n", "40",
            "--epochs", "1", "--eval-size", "12", "--probe-size", "8",
        ]  # fmt: skip

    with FakeOpenAIServer(_responder, latency=0.05) as server:
        first = _distill(run_args(server.url), env, tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        run = out / "greenleaf"
        eval_bytes = (run / "eval.jsonl").read_bytes()
        train_before = _lines(run / "train_ids.jsonl")

        args = ["improve", "--n", "8", "--control"]
        cmd = [sys.executable, "-m", "distill", *args]
        watch = run / "improve" / "round-1" / "targeted" / "generated.jsonl"
        sigkill_midway(cmd, env, tmp_path, watch, lines=3, timeout=300)
        state = json.loads((run / "improve" / "round-1" / "round.json").read_text())
        assert "after" not in state  # killed before the round finished
        committed = _answered_calls(run / "improve" / "round-1" / "targeted" / "calls.sqlite")
        assert committed

        done = _distill(args, env, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        # every teacher call finished before the kill was answered once over both runs; at
        # most the requests in flight at the kill (concurrency 8) were sent again (the judge
        # may be asked the same question for two students whose replies are the same)
        answered = _server_answers(server)
        assert all(answered[key] == 1 for key in committed)
        assert sum(1 for n in answered.values() if n > 1) <= 8

        assert (run / "eval.jsonl").read_bytes() == eval_bytes  # the eval set is frozen
        report = json.loads((run / "improve" / "round-1" / "report.json").read_text())
        targets = set(report["targets"])
        assert 1 <= len(targets) <= 3
        added = _lines(run / "improve.jsonl")
        assert len(added) == report["added"] > 0
        assert {a["meta"]["topic"] for a in added} <= targets  # only where the student is weak
        assert all(a["meta"]["source"] == "improve" and a["meta"]["round"] == 1 for a in added)
        train_after = _lines(run / "train_ids.jsonl")
        assert [r["id"] for r in train_after] == [r["id"] for r in train_before] + [
            a["id"] for a in added
        ]
        assert len(_lines(run / "train.jsonl")) == len(train_after)
        held_ids = {r["id"] for r in _lines(run / "eval_ids.jsonl")}
        assert not held_ids & {a["id"] for a in added}

        # the control got as many examples, spread over every cell, and a student of its own
        control = _lines(run / "improve" / "round-1" / "control" / "added.jsonl")
        assert len(control) == len(added)
        assert (run / "improve" / "round-1" / "control" / "eval.jsonl").read_bytes() == eval_bytes
        att = report["attribution"]
        assert att["targeted_cells"]["n"] + att["elsewhere"]["n"] == report["held_out"] == 12
        assert "control_gain" in att["targeted_cells"] and "round - control" in report["headline"]
        rows = report["cells"]["topic"]
        assert {r["value"] for r in rows if r["targeted"]} == targets & {r["value"] for r in rows}
        assert "improve round 1" in done.stdout and "targeted cells" in done.stdout

        manifest = json.loads((run / "manifest.json").read_text())
        (record,) = manifest["improve"]["rounds"]
        assert record["added"] == len(added) and record["control"] is True
        assert record["before"]["examples"] == record["after"]["examples"] == 12
        (config,) = run.glob("train/*/config.json")
        assert json.loads(config.read_text())["examples"]["train"] == len(train_after)  # retrained

        # `distill run --rounds 1` after it: every stage current (split again, as improve.jsonl
        # is new to it, with the same eval set), training and the round done, nothing re-sent
        asked = server.counts["requests"]
        rerun = _distill([*run_args(server.url), "--rounds", "1"], env, tmp_path)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "1 round(s) done already, skipped" in rerun.stderr
        assert server.counts["requests"] == asked
        status = _distill(["status"], {**env, "COLUMNS": "300"}, tmp_path)
        assert "improve 1" in status.stdout and "with a uniform control" in status.stdout
    assert (run / "eval.jsonl").read_bytes() == eval_bytes
    assert [r["id"] for r in _lines(run / "train_ids.jsonl")] == [r["id"] for r in train_after]

    # a new split keeps the additions in train and draws the same eval set
    again = _distill(["split", "--eval-size", "12"], env, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run / "eval.jsonl").read_bytes() == eval_bytes
    assert {a["id"] for a in added} <= {r["id"] for r in _lines(run / "train_ids.jsonl")}


def test_candidates_are_customer_messages_neither_answered_nor_held_out(make_run, tmp_path, style):
    from distill.runs import atomic_write_jsonl
    from distill.stages.improve.planning import candidates

    prompts = tmp_path / "customers.jsonl"
    topics = ["late order", "late order", "repotting", "repotting", "refunds"]
    atomic_write_jsonl(
        prompts,
        [
            {"messages": [{"role": "user", "content": f"question {i} about {t}"}],
             "meta": {"topic": t}}
            for i, t in enumerate(topics)
        ],
    )  # fmt: skip
    held = {"messages": [{"role": "user", "content": "Question 3 about  repotting"},
                         {"role": "assistant", "content": "Happy to help!"}]}  # fmt: skip
    run = make_run("cands", eval__jsonl=[held])
    run.update_manifest(
        inputs={"customers": {"path": str(prompts)}},
        plan=[{"plan_index": 0, "topic": "late order", "prompt": 0}],
    )
    earlier = [[{"plan_index": 0, "topic": "refunds", "prompt": 4}]]
    got = candidates(run, style, axis="topic", wanted=10, seed=0, round_no=2, earlier=earlier)
    # 0 answered by the run, 4 by an earlier round, 3 held out (same words, other case/spaces)
    assert sorted(p.prompt for p in got) == [1, 2]
    assert {p.prompt: p.topic for p in got} == {1: "late order", 2: "repotting"}


def test_improve_on_held_out_examples_without_plan_points_is_one_line_before_any_call(make_run):
    from click.testing import CliRunner

    from distill.cli import cli

    run = make_run(
        "imported",
        eval__jsonl=[{"messages": []}] * 2,
        eval_ids__jsonl=[{"id": "a", "meta": {}}, {"id": "b", "meta": {}}],
    )
    run.update_manifest(student={"model": "local:/nowhere/adapter", "base": "local:smollm2-135m"})
    r = CliRunner().invoke(cli, ["improve", "--run", str(run.path)])
    assert r.exit_code != 0  # an imported run has no teacher to ask
    assert "improve has no teacher to ask" in r.output.strip().splitlines()[-1]

    run.update_manifest(
        inputs={"seeds": {"path": str(SEEDS)}, "style": {"path": str(STYLE)}},
        config={"teacher": "fake:teacher", "generate": {"teacher": "fake:teacher", "seed": 0}},
    )
    r = CliRunner().invoke(cli, ["improve", "--run", str(run.path)])
    assert r.exit_code != 0
    assert r.output.strip().splitlines()[-1] == (
        f"Error: {run.file('eval_ids.jsonl')}: the held-out examples record fewer than two "
        "values of topic, so there are no cells to rank; they carry no plan point (meta topic, "
        "persona, intent, turns), as examples from `distill generate` do"
    )
    assert not (run.path / "improve").exists()


def test_what_a_reviewer_rejects_among_the_additions_is_never_trained(make_run):
    """improve's additions are reviewable: a rejected one leaves train at the next split and
    at the gate before training, an edited one is trained as edited; eval stays as it was."""
    from conftest import greenleaf_example

    from distill.runs import read_jsonl
    from distill.stages.review import load_examples, record_decision
    from distill.stages.review_gate import apply_review_gate
    from distill.stages.split import SplitConfig, split_run

    pool = [
        greenleaf_example(f"Where is my order GL-{100 + i}? It said {i} days.", f"So sorry! "
                          f"I've checked GL-{100 + i}: it arrives in {i} days.", topic=t)
        for i, t in enumerate(["late order", "refunds"] * 6)
    ]  # fmt: skip
    added = [
        {**greenleaf_example(f"Can I repot a {p} in winter?", f"Great question! Repot the {p} "
                             "in spring; I'll email a guide.", topic="repotting"),
         "meta": {"topic": "repotting", "source": "improve", "round": 1}}
        for p in ("fern", "cactus", "bonsai")
    ]  # fmt: skip
    run = make_run("reviewed", deduped__jsonl=pool, improve__jsonl=added)
    split_run(run, SplitConfig(eval_size=4))
    eval_before = run.file("eval.jsonl").read_bytes()
    train_ids = [r["id"] for r in read_jsonl(run.file("train_ids.jsonl"))]
    assert {a["id"] for a in added} <= set(train_ids)  # train only
    assert {a["id"] for a in added} <= {e.id for e in load_examples(run)}  # under review

    record_decision(run, added[0]["id"], "reject", "wrong advice")
    edited = [*added[1]["messages"][:-1], {"role": "assistant", "content": "Happy to help!"}]
    record_decision(run, added[1]["id"], "edit", messages=edited)
    apply_review_gate(run)  # what `distill train` does first
    train = [r["messages"] for r in read_jsonl(run.file("train.jsonl"))]
    assert added[0]["messages"] not in train and edited in train
    split_run(run, SplitConfig(eval_size=4))  # and a new split agrees
    train = [r["messages"] for r in read_jsonl(run.file("train.jsonl"))]
    assert added[0]["messages"] not in train and edited in train
    assert added[2]["messages"] in train
    assert run.file("eval.jsonl").read_bytes() == eval_before
    rejected = [r for r in read_jsonl(run.file("rejected.jsonl")) if r["id"] == added[0]["id"]]
    assert rejected and "wrong advice" in rejected[-1]["reason"]
