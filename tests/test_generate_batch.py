"""`distill generate --batch` against a scripted loopback Batch API (fake_batch_server.py):
batches that complete, expire, fail and come back in part; re-asks in a follow-up batch;
cancel, detach, and SIGKILL at the moments a second upload or batch could happen."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_batch_server import FakeBatchServer
from fake_openai_server import FakeOpenAIServer
from test_generate import _server_responder, good_answer, seeds_file  # noqa: F401

from distill.cli import cli
from distill.runs import read_jsonl

KEY = "sk-test-batch-key-0123"


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("DISTILL_POLL_INTERVAL", "0.005")
    monkeypatch.setenv("DISTILL_POLL_MAX", "0.02")
    monkeypatch.setenv("DISTILL_BATCH_GATHER_S", "0.05")


def generate(seeds: Path, url: str, *extra: str, n: int = 6):
    args = ["generate", "--seeds", str(seeds), "--n", str(n), "--teacher", "openai:gpt-4o-mini"]
    result = CliRunner().invoke(cli, [*args, "--base-url", url, *extra])
    assert KEY not in result.output
    return result


def run_dir(name: str = "shop") -> Path:
    return Path("outputs") / name


def rows(path: Path) -> list[dict]:
    return list(read_jsonl(path)) if path.exists() else []


def batch_inputs(name: str = "shop") -> list[list[dict]]:
    folder = run_dir(name) / "batch"
    return [rows(p) for p in sorted(folder.glob("round-???.jsonl"))]


def test_batch_answers_pass_the_same_checks_at_half_the_live_price(seeds_file):  # noqa: F811
    with FakeOpenAIServer(_server_responder) as live:
        r = generate(seeds_file, live.url, "--name", "live")
        assert r.exit_code == 0, r.output
    with FakeBatchServer(_server_responder) as server:
        r = generate(seeds_file, server.url, "--name", "batched", "--batch")
        assert r.exit_code == 0, r.output
        assert (server.counts["uploads"], server.counts["batches_created"]) == (1, 1)
        assert server.counts["ok"] == 6  # every answer came out of the batch
    assert "6 of 6 accepted" in r.output
    live_rows, batch_rows = (
        rows(run_dir("live") / "generated.jsonl"),
        rows(run_dir("batched") / "generated.jsonl"),
    )
    by_point = lambda xs: sorted((x["meta"]["plan_index"], x["messages"]) for x in xs)  # noqa: E731
    assert by_point(batch_rows) == by_point(live_rows)
    # the batch sent the very bodies the live path sent, one custom_id per plan point
    (sent,) = batch_inputs("batched")
    assert sorted(json.dumps(x["body"], sort_keys=True) for x in sent) == sorted(
        json.dumps(b, sort_keys=True) for b in live.bodies
    )
    assert sorted(int(x["custom_id"].split("-")[1]) for x in sent) == list(range(6))
    stage_live = json.loads((run_dir("live") / "manifest.json").read_text())["stages"]
    stage_batch = json.loads((run_dir("batched") / "manifest.json").read_text())["stages"]
    cost_live = stage_live["generate"]["cost_usd"]
    cost_batch = stage_batch["generate"]["cost_usd"]
    assert cost_live > 0 and cost_batch == pytest.approx(cost_live / 2, abs=2e-6)  # 6 decimals
    (entry,) = stage_batch["generate"]["batch"]["rounds"]
    assert entry["status"] == "completed" and entry["requests"] == 6


def _bad_then_good(body):
    """A chat in markdown (against the style) first; a good one when re-asked."""
    answer = good_answer(body["messages"][:2])
    if len(body["messages"]) == 2:
        for ex in answer["exchanges"]:
            ex["assistant"] = "**Sorry!** " + ex["assistant"]
    return json.dumps(answer)


def test_answers_that_break_the_style_are_reasked_in_a_follow_up_batch(seeds_file):  # noqa: F811
    with FakeBatchServer(_bad_then_good) as server:
        r = generate(seeds_file, server.url, "--batch")
        assert r.exit_code == 0, r.output
        assert server.counts["batches_created"] == 2
    first, second = batch_inputs()
    assert len(first) == len(second) == 6
    assert all(len(x["body"]["messages"]) == 4 for x in second)  # the re-ask, with the reason
    assert "6 re-asks" in r.output
    assert {x["meta"]["attempts"] for x in rows(run_dir() / "generated.jsonl")} == {2}


def test_what_still_breaks_the_style_after_the_reasks_is_rejected(seeds_file):  # noqa: F811
    def always_bad(body):
        return _bad_then_good({"messages": body["messages"][:2]})

    with FakeBatchServer(always_bad) as server:
        r = generate(seeds_file, server.url, "--batch", "--max-reasks", "1", n=2)
        # 3 x n points tried, n at a time, each point in two rounds (the ask and its
        # re-ask): a rejected point's replacement starts once it is rejected
        assert server.counts["batches_created"] == 6
    assert r.exit_code == 1 and "none of the 6 planned conversations passed" in r.output
    reasons = [x["reason"] for x in rows(run_dir() / "rejected.jsonl")]
    assert len(reasons) == 6 and all("invalid after 2 attempt(s)" in x for x in reasons)


def test_an_expired_batch_sends_what_it_did_not_run_in_a_new_batch(seeds_file):  # noqa: F811
    with FakeBatchServer(_server_responder, script=["expire"]) as server:
        r = generate(seeds_file, server.url, "--batch")
        assert r.exit_code == 0, r.output
        assert (server.counts["uploads"], server.counts["batches_created"]) == (2, 2)
        assert server.counts["ok"] == 6  # 3 from the expired batch's partial output
    first, second = batch_inputs()
    errors = rows(run_dir() / "batch" / "round-001.errors.jsonl")
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert {x["custom_id"] for x in second} == {e["custom_id"] for e in errors}
    assert len(rows(run_dir() / "generated.jsonl")) == 6
    status = CliRunner().invoke(cli, ["status"]).output
    assert "batch 1" in status and "expired" in status and "batch 2" in status


def test_requests_a_batch_failed_inside_are_run_again(seeds_file):  # noqa: F811
    with FakeBatchServer(_server_responder, script=["partial"]) as server:
        r = generate(seeds_file, server.url, "--batch")
        assert r.exit_code == 0, r.output
        assert server.counts["batches_created"] == 2
    first, second = batch_inputs()
    assert len(first) == 6 and len(second) == 2  # every third came back as a 500
    assert len(rows(run_dir() / "generated.jsonl")) == 6


def test_a_request_the_batch_refused_is_rejected_with_the_servers_words(seeds_file):  # noqa: F811
    with FakeBatchServer(_server_responder, default="refuse") as server:
        r = generate(seeds_file, server.url, "--batch", "--max-reasks", "0", n=2)
        assert server.counts["ok"] == 0
    assert r.exit_code == 1 and "none of the 6 planned conversations passed" in r.output
    reasons = [x["reason"] for x in rows(run_dir() / "rejected.jsonl")]
    assert len(reasons) == 6
    assert all(
        "batch request failed: maximum context length exceeded (context_length_exceeded)" in x
        for x in reasons
    )


def test_a_failed_batch_is_one_line_and_a_rerun_reuses_the_upload(seeds_file):  # noqa: F811
    with FakeBatchServer(_server_responder, script=["fail"]) as server:
        r = generate(seeds_file, server.url, "--batch")
        assert r.exit_code == 1
        assert "failed: model not found (line 1 of the input)" in r.output
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()[-1]) < 400
        r = generate(seeds_file, server.url, "--batch")
        assert r.exit_code == 0, r.output
        # the same requests: the file already uploaded, a new batch for it
        assert (server.counts["uploads"], server.counts["batches_created"]) == (1, 2)


def test_a_batch_made_behind_a_500_is_found_not_made_again(seeds_file):  # noqa: F811
    with FakeBatchServer(_server_responder) as server:
        server.create_500 = 1
        r = generate(seeds_file, server.url, "--batch")
        assert r.exit_code == 1
        assert "rerun the same command: it first checks whether the batch was made" in r.output
        r = generate(seeds_file, server.url, "--batch")
        assert r.exit_code == 0, r.output
        assert "found batch batch_0002, created before the last run stopped" in r.output
        assert (server.counts["uploads"], server.counts["batches_created"]) == (1, 1)


def test_batch_needs_an_openai_teacher_and_says_so_before_anything(seeds_file):  # noqa: F811
    r = CliRunner().invoke(
        cli, ["generate", "--seeds", str(seeds_file), "--teacher", "ollama:llama3.1", "--batch"]
    )
    assert r.exit_code == 2
    assert "--batch uses OpenAI's Batch API and ollama:llama3.1 is not an openai: teacher" in (
        r.output
    )
    assert not run_dir().exists()


def test_dry_run_prices_a_batch_at_half(seeds_file):  # noqa: F811
    def cost(*extra: str) -> float:
        r = CliRunner().invoke(
            cli,
            [
                "generate",
                "--seeds",
                str(seeds_file),
                "--n",
                "30",
                "--teacher",
                "gpt-4o",
                "--dry-run",
            ]
            + list(extra),
        )
        assert r.exit_code == 0, r.output
        line = next(x for x in r.output.splitlines() if x.startswith("Estimated cost"))
        return float(line.split("$")[1].split()[0])

    assert cost("--batch") == pytest.approx(cost() / 2, abs=2e-4)
    assert not run_dir().exists()


# -- processes killed, detached, cancelled ------------------------------------------------


def _cmd(seeds: Path, url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "distill",
        "generate",
        "--seeds",
        str(seeds),
        "--n",
        "6",
        "--teacher",
        "openai:gpt-4o-mini",
        "--base-url",
        url,
        "--batch",
        *extra,
    ]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DISTILL_OUTPUTS": str(tmp_path / "outputs")}


def _wait_for(pred, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("moment", ["upload", "create", "following"])
def test_sigkill_at_any_moment_then_rerun_never_uploads_or_submits_twice(
    seeds_file,  # noqa: F811
    tmp_path,
    moment,
):
    """SIGKILL after an upload (or a batch creation) was sent but before its answer came, or
    while following; the rerun finds the file, the batch, and finishes with one of each."""
    from conftest import sigkill_midway

    env = _env(tmp_path)
    log = tmp_path / "gate.log"
    with FakeBatchServer(_server_responder) as server:
        cmd = _cmd(seeds_file, server.url)
        if moment == "following":
            server.freeze.set()
            watch = tmp_path / "outputs" / "shop" / "batch" / "batches.json"
            state = lambda: watch.exists() and "batch_id" in watch.read_text()  # noqa: E731
            proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE)
            _wait_for(state)
            _wait_for(lambda: server.counts["batch_gets"] >= 2)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            server.freeze.clear()
        else:
            server.gate, server.gate_log = moment, log
            sigkill_midway(cmd, env, tmp_path, log, 1, timeout=60)
            assert server.counts["uploads"] == 1
        res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert (server.counts["uploads"], server.counts["batches_created"]) == (1, 1)
        assert server.counts["ok"] == 6
    assert len(rows(tmp_path / "outputs" / "shop" / "generated.jsonl")) == 6
    text = "".join(
        p.read_text(errors="ignore") for p in (tmp_path / "outputs").rglob("*") if p.is_file()
    )
    assert KEY not in text


def test_ctrl_c_detaches_and_cancel_stops_the_batch(seeds_file, tmp_path):  # noqa: F811
    env = _env(tmp_path)
    with FakeBatchServer(_server_responder) as server:
        server.freeze.set()
        cmd = _cmd(seeds_file, server.url)
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: server.counts["batch_gets"] >= 2)
        second = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
        assert second.returncode == 2
        assert "another `distill generate --batch` is following this run" in second.stderr
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert (
            "Detached: batch batch_0002 keeps running on the server (nothing was cancelled)" in err
        )
        assert "--attach" in err and server.counts["cancels"] == 0

        r = subprocess.run(
            [*cmd, "--cancel"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stderr
        assert "cancelled batch batch_0002" in r.stdout and server.counts["cancels"] == 1

        # attaching collects what the cancelled batch answered and stops in one line
        server.freeze.clear()
        r = subprocess.run(
            [*cmd, "--attach"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 1
        assert "batch batch_0002 was cancelled; its 3 answers are kept" in r.stderr + r.stdout
        # a rerun sends the other three in a new batch
        r = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert server.counts["batches_created"] == 2
    assert len(rows(tmp_path / "outputs" / "shop" / "generated.jsonl")) == 6


def test_attach_without_a_batch_is_one_line(seeds_file):  # noqa: F811
    r = generate(seeds_file, "http://127.0.0.1:9/v1", "--batch", "--attach")
    assert r.exit_code == 2 and "no batch to attach to" in r.output


def test_max_budget_holds_at_batch_prices_before_anything_is_submitted(seeds_file):  # noqa: F811
    with FakeBatchServer(_server_responder) as server:
        r = generate(seeds_file, server.url, "--batch", "--max-budget", "0.0006")
        assert server.counts["batches_created"] == 1
    assert r.exit_code == 1 and "--max-budget $0.0006 reached" in r.output
    (sent,) = batch_inputs()
    assert 0 < len(sent) < 6  # only what fits at its worst case was submitted
    stage = json.loads((run_dir() / "manifest.json").read_text())["stages"]["generate"]
    assert stage["status"] == "stopped-budget" and stage["cost_usd"] <= 0.0006
