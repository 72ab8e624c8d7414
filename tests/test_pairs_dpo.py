"""Preference tuning: `distill pairs` (teacher vs student, clear margins only, every drop in
rejected.jsonl), `distill train --method dpo` (local on a tiny random Llama, hosted against a
scripted fine-tuning API) and eval's base / SFT / SFT+DPO side by side."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from conftest import STYLE, SYSTEM

from distill.backends.fake import FakeBackend
from distill.cli import cli
from distill.runs import atomic_write_jsonl, read_jsonl
from distill.stages.pairs import build_pairs

GOOD = "Sorry about the wait! Your {p} ships today, and I will email you the tracking link soon."
BAD = "## Order\n- it is late"
PLANTS = ["fern", "cactus", "orchid", "ivy", "bonsai", "pothos", "monstera", "palm", "aloe", "sage"]


def chat(p: str, reply: str | None = None) -> list[dict]:
    return [
        {"role": "system", "content": "A long teacher prompt the student never sees."},
        {"role": "user", "content": f"Where is my {p} order?"},
        {"role": "assistant", "content": reply or GOOD.format(p=p)},
    ]


@pytest.fixture
def pairs_run(make_run):
    """train: 6 examples (ids t0..t5) with ids files, eval: 2; t4 rejected and t5 edited in
    review; the style spec recorded."""
    train = [chat(p) for p in PLANTS[:6]]
    train[3] = chat("ivy", "ok")  # the teacher's own reply fails the spec: no pair
    run = make_run(
        "prefs",
        train__jsonl=[{"messages": m} for m in train],
        eval__jsonl=[{"messages": chat(p)} for p in PLANTS[6:8]],
        train_ids__jsonl=[{"id": f"t{i}", "meta": {}} for i in range(6)],
        eval_ids__jsonl=[{"id": f"e{i}", "meta": {}} for i in range(2)],
    )
    edited = chat(
        "bonsai",
        "Thanks for asking! Your bonsai is packed today, and I will email you the tracking link soon.",
    )
    atomic_write_jsonl(
        run.file("review.jsonl"),
        [
            {"id": "t4", "decision": "reject", "reason": "wrong plant"},
            {"id": "t5", "decision": "edit", "messages": edited},
        ],
    )
    run.update_manifest(
        inputs={"style": {"path": str(STYLE)}},
        student={"model": "fake:student", "base": "fake:base"},
    )
    return run


def student_replies(messages):
    """Fails the spec except for the cactus (no margin) and the orchid (the teacher's reply)."""
    user = messages[-1]["content"]
    if "cactus" in user:
        return "Thanks for asking! Your cactus ships today; I will send tracking by email."
    if "orchid" in user:
        return GOOD.format(p="orchid")
    return BAD


def test_pairs_keep_clear_margins_only_and_log_every_drop(pairs_run):
    student = FakeBackend(default=student_replies, name="student")
    summary = build_pairs(pairs_run, backends={"fake:student": student})

    lines = list(read_jsonl(pairs_run.file("pairs.jsonl")))
    # fern (t0) passes vs fails; the edited bonsai (t5) is used as edited
    assert len(lines) == 2 and summary["kept"] == 2
    first = lines[0]
    assert set(first) == {"input", "preferred_output", "non_preferred_output"}
    msgs = first["input"]["messages"]
    assert msgs[0] == {"role": "system", "content": SYSTEM}  # the spec's short prompt, as eval
    assert msgs[-1] == {"role": "user", "content": "Where is my fern order?"}
    assert first["preferred_output"] == [{"role": "assistant", "content": GOOD.format(p="fern")}]
    assert first["non_preferred_output"] == [{"role": "assistant", "content": BAD}]
    assert lines[1]["preferred_output"][0]["content"].startswith("Thanks for asking! Your bonsai")
    ids = [r["id"] for r in read_jsonl(pairs_run.file("pairs_ids.jsonl"))]
    assert ids == ["t0", "t5"]

    # the example rejected in review was never asked about; the edited one only as edited
    asked = [m[-1]["content"] for m in student.requests]
    assert len(asked) == 5 and not any("pothos" in u for u in asked)
    dropped = {
        r["id"]: r["reason"]
        for r in read_jsonl(pairs_run.file("rejected.jsonl"))
        if r["stage"] == "pairs"
    }
    assert dropped["t1"].startswith("no-margin: the student's reply passes")
    assert dropped["t2"].startswith("same-reply")
    assert dropped["t3"].startswith("chosen-fails-style")
    assert "t4" not in dropped  # rejected in review, logged by the review gate instead
    stage = pairs_run.stage("pairs")
    assert stage["kept"] == 2 and stage["dropped"] == 3
    assert stage["reasons"] == {"no-margin": 1, "same-reply": 1, "chosen-fails-style": 1}

    # a rerun asks nothing again (calls.sqlite) and logs no drop twice
    again = FakeBackend(default=student_replies, name="student")
    build_pairs(pairs_run, backends={"fake:student": again})
    assert again.requests == []
    rows = [r for r in read_jsonl(pairs_run.file("rejected.jsonl")) if r["stage"] == "pairs"]
    assert len(rows) == 3


def test_with_a_judge_a_pair_needs_its_preference_in_both_orders(pairs_run):
    def judging(messages):
        prompt = messages[-1]["content"]
        a = prompt.split("<reply_a>\n")[1].split("\n</reply_a>")[0]
        if "fern" in prompt:  # position bias: always A
            return json.dumps({"reason": "first", "winner": "A"})
        return json.dumps({"reason": "teacher", "winner": "A" if a != BAD else "B"})

    judge = FakeBackend(default=judging, name="judge")
    student = FakeBackend(default=lambda m: BAD, name="student")
    summary = build_pairs(
        pairs_run, judge="fake:judge", backends={"fake:student": student, "fake:judge": judge}
    )
    dropped = {
        r["id"]: r["reason"]
        for r in read_jsonl(pairs_run.file("rejected.jsonl"))
        if r["stage"] == "pairs"
    }
    assert "teacher first: A, student first: A" in dropped["t0"]
    assert summary["kept"] == 4  # cactus, orchid, ivy (the judge decides, not the spec), bonsai
    assert len(judge.requests) == 10  # both orders for each of the 5 candidates


def test_pairs_cli_without_a_split_or_a_margin_is_one_line(make_run):
    run = make_run("empty")
    r = CliRunner().invoke(cli, ["pairs", "--run", str(run.path)])
    assert r.exit_code != 0 and "train.jsonl: missing; run `distill split` first" in r.output
    run = make_run("nospec", train__jsonl=[{"messages": chat("fern")}], eval__jsonl=[])
    r = CliRunner().invoke(cli, ["pairs", "--run", str(run.path), "--student", "fake:s"])
    assert r.exit_code != 0 and "no style spec" in r.output and "--judge MODEL" in r.output
    assert "Traceback" not in r.output


# -- local DPO on a tiny random Llama -----------------------------------------------------


def preference_lines(n: int) -> list[dict]:
    out = []
    for i in range(n):
        p = PLANTS[i % len(PLANTS)]
        out.append(
            {
                "input": {"messages": chat(p)[:2], "tools": [], "parallel_tool_calls": True},
                "preferred_output": [{"role": "assistant", "content": GOOD.format(p=p)}],
                "non_preferred_output": [{"role": "assistant", "content": BAD}],
            }
        )
    return out


FAST = ["--epochs", "2", "--lr", "1e-2", "--batch-tokens", "256", "--device", "cpu"]


def test_local_dpo_from_the_sft_adapter_trains_records_and_is_done_on_rerun(
    make_run, tiny_model_dir
):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    run = make_run(
        "dpo",
        train__jsonl=[{"messages": chat(p)} for p in PLANTS] + [{"messages": chat("rose")}],
        eval__jsonl=[{"messages": chat(p)} for p in PLANTS[:4]],
        pairs__jsonl=preference_lines(12),
    )
    sft = CliRunner().invoke(
        cli, ["train", "--run", str(run.path), "--student", f"local:{tiny_model_dir}", *FAST]
    )
    assert sft.exit_code == 0, sft.output
    sft_model = run.manifest["student"]["model"]

    r = CliRunner().invoke(cli, ["train", "--run", str(run.path), "--method", "dpo", *FAST])
    assert r.exit_code == 0, r.output
    assert "the run's trained SFT student" in r.output
    out = run.path / "train" / f"local-{tiny_model_dir.name}-dpo"
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert not (out / "checkpoint").exists()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epochs = [row for row in rows if "lr" not in row]
    assert len(epochs) == 2
    # the loss starts at log 2 (policy = reference) and falls as chosen pulls ahead
    assert epochs[-1]["dpo_loss"] < math.log(2) and epochs[-1]["reward_accuracy"] > 0.5
    m = run.manifest
    assert m["student"]["model"] == f"local:{(out / 'adapter').resolve()}"
    assert m["preference"] == {
        "model": m["student"]["model"],
        "reference": sft_model,
        "base": f"local:{tiny_model_dir}",
        "method": "dpo",
    }
    assert run.stage("dpo")["pairs"] == 12
    assert run.stage("train")["student_model"] == sft_model  # the SFT record is untouched

    again = CliRunner().invoke(cli, ["train", "--run", str(run.path), "--method", "dpo", *FAST])
    assert again.exit_code == 0 and "already trained" in again.output
    assert run.manifest["preference"]["reference"] == sft_model  # still the SFT, not itself


def test_local_dpo_resumes_after_a_kill(make_run, tiny_model_dir):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from distill.stages.train_dpo import train_dpo_local

    class Killed(Exception):
        pass

    def train(run, **extra):
        return train_dpo_local(
            run,
            str(tiny_model_dir),
            None,
            epochs=2,
            lr=1e-2,
            batch_tokens=256,
            device="cpu",
            checkpoint_every=2,
            **extra,
        )

    straight = make_run("straight", pairs__jsonl=preference_lines(12))
    train(straight)

    def kill_at_step_3(row):
        if row["step"] == 3 and "lr" in row:
            raise Killed

    broken = make_run("broken", pairs__jsonl=preference_lines(12))
    with pytest.raises(Killed):
        train(broken, on_step=kill_at_step_3)
    out = broken.path / "train" / f"local-{tiny_model_dir.name}-dpo"
    assert torch.load(out / "checkpoint" / "state.pt", weights_only=False)["progress"]["step"] == 2
    train(broken)
    steps = [
        json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines() if '"lr"' in x
    ]
    assert steps == list(range(1, len(steps) + 1))  # none lost, none repeated
    a = load_file(straight.path / "train" / out.name / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_dpo_without_pairs_or_with_too_few_is_one_line(make_run, tiny_model_dir):
    run = make_run("few", train__jsonl=[{"messages": chat("fern")}])
    args = [
        "train",
        "--run",
        str(run.path),
        "--method",
        "dpo",
        "--student",
        f"local:{tiny_model_dir}",
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and "pairs.jsonl: missing; run `distill pairs` first" in r.output
    atomic_write_jsonl(run.file("pairs.jsonl"), preference_lines(3))
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and "3 pair(s); DPO needs at least 10" in r.output
    atomic_write_jsonl(run.file("pairs.jsonl"), [{"messages": []}] * 12)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and "pairs.jsonl:1: not a preference pair" in r.output
    r = CliRunner().invoke(cli, ["train", "--run", str(run.path), "--beta", "0.2"])
    assert r.exit_code != 0 and "--beta is a DPO setting" in r.output


# -- hosted DPO against the scripted fine-tuning API --------------------------------------


def test_hosted_dpo_uploads_the_pairs_and_starts_a_dpo_job_once(make_run, monkeypatch):
    from openai_mock import ScriptedOpenAI
    from test_train_hosted import KEY, MODEL

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("DISTILL_POLL_INTERVAL", "0.005")
    monkeypatch.setenv("DISTILL_POLL_MAX", "0.02")
    run = make_run("hosted", pairs__jsonl=preference_lines(12))
    with ScriptedOpenAI(KEY) as api:
        args = ["train", "--run", str(run.path), "--method", "dpo", "--student", "gpt-4o-mini"]
        args += ["--base-url", api.url, "--yes", "--beta", "0.25", "--epochs", "2"]
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
        assert KEY not in r.output
        assert "pairs.jsonl: 12 examples" in r.output
        req = api.job()["request"]
        assert req["method"] == {
            "type": "dpo",
            "dpo": {
                "hyperparameters": {
                    "n_epochs": 2,
                    "batch_size": "auto",
                    "learning_rate_multiplier": "auto",
                    "beta": 0.25,
                }
            },
        }
        assert "validation_file" not in req
        job = json.loads((run.path / "train" / f"{MODEL}-dpo" / "job.json").read_text())
        assert job["status"] == "succeeded"
        m = run.manifest
        assert (
            m["preference"]["model"] == m["student"]["model"] == f"openai:{job['fine_tuned_model']}"
        )
        assert run.stage("dpo")["status"] == "succeeded" and "train" not in m.get("stages", {})
        # a rerun with the same pairs and settings starts no second job
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0 and "Already trained" in r.output


# -- eval: base, SFT and SFT+DPO side by side ---------------------------------------------


def test_eval_of_the_dpo_student_shows_base_sft_and_dpo_side_by_side(make_run):
    from distill.commands.evaluate import print_summary
    from distill.stages.evaluate import evaluate

    run = make_run(
        "side",
        train__jsonl=[{"messages": chat("rose")}],
        eval__jsonl=[{"messages": chat(p)} for p in PLANTS[:4]],
    )
    run.update_manifest(
        inputs={"style": {"path": str(STYLE)}},
        student={"model": "fake:dpo", "base": "fake:base"},
        preference={"model": "fake:dpo", "reference": "fake:sft", "base": "fake:base"},
    )
    probe = run.path / "probe.jsonl"
    probe.write_text(json.dumps({"prompt": "2+2?", "answer": "4", "check": "contains"}) + "\n")

    def replying(passing: int):
        def answer(messages):
            user = messages[-1]["content"]
            if user == "2+2?":
                return "4"
            i = next(i for i, p in enumerate(PLANTS) if p in user)
            return GOOD.format(p=PLANTS[i]) if i < passing else BAD

        return answer

    backends = {
        "fake:base": FakeBackend(default=replying(0), name="base"),
        "fake:sft": FakeBackend(default=replying(2), name="sft"),
        "fake:dpo": FakeBackend(default=replying(3), name="dpo"),
    }
    report = evaluate(run, backends=backends, embedder=None, probe_path=probe)
    cols = report["side_by_side"]["models"]
    assert [(c["role"], c["model"]) for c in cols] == [
        ("base", "fake:base"),
        ("compared", "fake:sft"),
        ("student", "fake:dpo"),
    ]
    assert [c["style"]["mean"] for c in cols] == [0.0, 0.5, 0.75]
    assert cols[1]["style_gain"]["mean"] == 0.5 and cols[1]["probe"]["mean"] == 1.0
    assert len(backends["fake:sft"].requests) == 5  # 4 held-out + 1 probe
    html = (run.path / "eval" / "fake-dpo" / "report.html").read_text()
    assert "Side by side" in html and "fake:sft" in html
    saved = json.loads((run.path / "eval" / "fake-dpo" / "report.json").read_text())
    assert saved["side_by_side"] == report["side_by_side"]
    print_summary(report)  # the terminal table renders


def test_eval_of_a_plain_sft_student_is_unchanged(make_run):
    from distill.stages.evaluate import evaluate

    run = make_run("plain", eval__jsonl=[{"messages": chat(p)} for p in PLANTS[:2]])
    run.update_manifest(
        inputs={"style": {"path": str(STYLE)}},
        student={"model": "fake:sft", "base": "fake:base"},
        preference={"model": "fake:older-dpo", "reference": "fake:sft"},
    )
    probe = run.path / "probe.jsonl"
    probe.write_text(json.dumps({"prompt": "2+2?", "answer": "4", "check": "contains"}) + "\n")
    backends = {
        "fake:base": FakeBackend(default=lambda m: BAD, name="base"),
        "fake:sft": FakeBackend(default=lambda m: BAD, name="sft"),
    }
    report = evaluate(run, backends=backends, embedder=None, probe_path=probe)
    assert "side_by_side" not in report


def test_local_dpo_trains_one_epoch_unless_told_otherwise():
    """Three epochs (the supervised rule) over-fitted the demo's 74 pairs: the probe fell from
    21% to 5%; one kept it at 20% with the same style (README, preference tuning)."""
    from distill.lora.config import LocalTrainConfig
    from distill.lora.dpo import DPOTrainConfig

    assert DPOTrainConfig.from_options("m", {}, 74).epochs == 1
    assert DPOTrainConfig.from_options("m", {"epochs": 3}, 74).epochs == 3
    assert LocalTrainConfig.from_options("m", {}, 74).epochs == 3  # supervised keeps its rule
