"""Kill-and-resume of `distill train --student gpt-4o-mini` with real processes: SIGKILL right
after the uploads, right after the job was created, and while following; Ctrl-C detaches.
The scripted server's own counters prove nothing is uploaded twice and no job is duplicated
or cancelled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from openai_mock import ScriptedOpenAI
from test_train_hosted import KEY, MODEL, assert_no_key_in, example

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture
def run(make_run):
    return make_run(
        "greenleaf",
        train__jsonl=[example(i, "train") for i in range(12)],
        eval__jsonl=[example(i, "held-out") for i in range(10)],
    )


def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DISTILL_"))}
    e.update(
        OPENAI_API_KEY=KEY,
        DISTILL_OUTPUTS=str(tmp_path / "outputs"),
        DISTILL_POLL_INTERVAL="0.02",
        DISTILL_POLL_MAX="0.1",
        PYTHONUNBUFFERED="1",
    )
    return e


def command(run, server: ScriptedOpenAI, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "distill",
        "train",
        "--run",
        str(run.path),
        "--student",
        "gpt-4o-mini",
        "--base-url",
        server.url,
        *flags,
    ]


def start(run, server, tmp_path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        command(run, server, *flags),
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(run, server, tmp_path, *flags: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command(run, server, *flags),
        cwd=tmp_path,
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert KEY not in done.stdout + done.stderr
    return done


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen, what: str, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"process ended before {what}: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def job_file(run) -> dict:
    p = run.path / "train" / MODEL / "job.json"
    return json.loads(p.read_text()) if p.exists() else {}


def kill(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert KEY not in out
    return out


def test_killed_right_after_the_uploads_resumes_without_uploading(run, tmp_path):
    with ScriptedOpenAI(KEY) as api:
        api.create_gate = "before"  # the job request arrives, and hangs unanswered
        proc = start(run, api, tmp_path, "--yes")
        wait_for(lambda: api.counts["create_requests"] == 1, proc, "the job request")
        kill(proc)
        assert api.counts["uploads"] == 2 and api.counts["jobs_created"] == 0
        assert job_file(run)["training_file"] == "file-0001"

        api.create_gate = None
        api.gate_open.set()
        done = finish(run, api, tmp_path, "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "already uploaded as file-0001" in done.stdout
        assert "already uploaded as file-0002" in done.stdout
        assert api.counts["uploads"] == 2 and api.counts["jobs_created"] == 1
        assert api.job()["status"] == "succeeded"
    assert run.manifest["student"]["model"] == f"openai:ft:{MODEL}:org-test:greenleaf:AbC123"
    assert_no_key_in(run.path)


def test_killed_after_the_job_was_created_attaches_to_that_job(run, tmp_path):
    with ScriptedOpenAI(KEY) as api:
        api.create_gate = "after"  # the server creates the job; the answer never arrives
        proc = start(run, api, tmp_path, "--yes")
        wait_for(lambda: api.counts["jobs_created"] == 1, proc, "the job")
        kill(proc)
        assert job_file(run)["pending_create"]["training_file"] == "file-0001"

        api.create_gate = None
        api.gate_open.set()
        done = finish(run, api, tmp_path, "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Found job ftjob-0001" in done.stdout
        assert api.counts["uploads"] == 2 and api.counts["jobs_created"] == 1
        assert job_file(run)["job_id"] == "ftjob-0001"
        assert job_file(run)["status"] == "succeeded"
    assert_no_key_in(run.path)


def test_killed_while_following_reattaches_and_never_cancels(run, tmp_path):
    with ScriptedOpenAI(KEY) as api:
        api.freeze.set()  # the job stays `running`, so the process keeps following
        proc = start(run, api, tmp_path, "--yes")
        wait_for(
            lambda: (
                job_file(run).get("status") == "running"
                and (job_file(run).get("last_event_id") or "").endswith("0005")
            ),
            proc,
            "the job to run",
        )
        out = kill(proc)
        assert "status: running" in out
        assert api.counts["cancels"] == 0 and api.job()["status"] == "running"

        api.freeze.clear()
        done = finish(run, api, tmp_path, "--yes")  # the same command again
        assert done.returncode == 0, done.stdout + done.stderr
        assert "attaching instead of starting another" in done.stdout
        assert "status: succeeded" in done.stdout
        assert api.counts["uploads"] == 2 and api.counts["jobs_created"] == 1
        assert api.counts["cancels"] == 0
    events = (run.path / "train" / MODEL / "events.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in events]
    assert ids == [e["id"] for e in api.events["ftjob-0001"]]  # none lost, none twice
    assert run.manifest["stages"]["train"]["status"] == "succeeded"
    assert_no_key_in(run.path)


def test_ctrl_c_detaches_without_cancelling(run, tmp_path):
    with ScriptedOpenAI(KEY) as api:
        api.freeze.set()
        proc = start(run, api, tmp_path, "--yes")
        wait_for(lambda: job_file(run).get("status") == "running", proc, "the job to run")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, out
        assert "detached from job ftjob-0001" in out
        assert "nothing was cancelled" in out
        assert "--attach" in out and "distill status" in out
        assert api.counts["cancels"] == 0 and api.job()["status"] == "running"

        api.freeze.clear()
        done = finish(run, api, tmp_path, "--attach")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "status: succeeded" in done.stdout
        assert api.counts["jobs_created"] == 1 and api.counts["cancels"] == 0
    assert_no_key_in(run.path)


def test_a_second_process_cannot_start_the_same_job_concurrently(run, tmp_path):
    with ScriptedOpenAI(KEY) as api:
        api.create_gate = "before"
        first = start(run, api, tmp_path, "--yes")
        wait_for(lambda: api.counts["create_requests"] == 1, first, "the job request")
        second = finish(run, api, tmp_path, "--yes")
        assert second.returncode == 2
        assert "another `distill train` is uploading or starting this job" in second.stderr
        assert api.counts["create_requests"] == 1 and api.counts["uploads"] == 2
        kill(first)
