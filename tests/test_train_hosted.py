"""`distill train --student gpt-4o-mini` against a scripted loopback fine-tuning API: the job
walks validating_files -> queued -> running -> succeeded / failed / cancelled."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from openai_mock import RESULT_CSV, ScriptedOpenAI

from distill.cli import cli

KEY = "sk-test-distill-SECRET-7f3a9c1e"
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."
MODEL = "gpt-4o-mini-2024-07-18"


def example(i: int, kind: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"My {kind} fern number {i} has brown tips. Help?"},
            {
                "role": "assistant",
                "content": f"Sorry about fern {i}! Water it weekly and keep it out of direct sun.",
            },
        ]
    }


@pytest.fixture
def run(make_run):
    return make_run(
        "greenleaf",
        train__jsonl=[example(i, "train") for i in range(12)],
        eval__jsonl=[example(i, "held-out") for i in range(10)],
    )


@pytest.fixture(autouse=True)
def fast_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("DISTILL_POLL_INTERVAL", "0.005")
    monkeypatch.setenv("DISTILL_POLL_MAX", "0.02")


@pytest.fixture
def api():
    with ScriptedOpenAI(KEY) as server:
        yield server


def train(run, server, *args: str, input: str | None = None):
    result = CliRunner().invoke(
        cli,
        ["train", "--run", str(run.path), "--student", "gpt-4o-mini", "--base-url", server.url]
        + list(args),
        input=input,
    )
    assert KEY not in result.output
    return result


def job_file(run) -> dict:
    return json.loads((run.path / "train" / MODEL / "job.json").read_text())


def assert_no_key_in(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), p


def test_walks_a_job_to_success_and_records_the_model(run, api):
    r = train(run, api, "--yes")
    assert r.exit_code == 0, r.output
    out = r.output
    # the plan: examples, billed tokens, epochs, cost
    assert "12 examples" in out and "10 examples" in out
    assert "billed tokens ~" in out and "estimated cost ~$" in out
    assert "epochs 9 (auto" in out  # OpenAI's default for 12 examples: ceil(100 / 12)
    # status changes and training events, in order
    order = ["status: queued", "status: running", "step 1/3", "step 3/3", "status: succeeded"]
    positions = [out.index(s) for s in order]
    assert positions == sorted(positions)
    assert "valid loss 0.7667" in out
    fine_tuned = f"ft:{MODEL}:org-test:greenleaf:AbC123"
    assert fine_tuned in out

    m = run.manifest
    assert m["student"] == {
        "model": f"openai:{fine_tuned}",
        "base": f"openai:{MODEL}",
        "base_url": api.url,
    }
    stage = m["stages"]["train"]
    assert stage["status"] == "succeeded"
    assert stage["job_id"] == "ftjob-0001"
    assert stage["fine_tuned_model"] == fine_tuned
    assert stage["trained_tokens"] == 12345

    # the result metrics file, base64-decoded to its CSV
    folder = run.path / "train" / MODEL
    assert (folder / "step_metrics.csv").read_text() == RESULT_CSV
    job = job_file(run)
    assert job["status"] == "succeeded" and job["fine_tuned_model"] == fine_tuned
    assert job["last_event_id"] == api.events["ftjob-0001"][-1]["id"]
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert [e["id"] for e in events] == [e["id"] for e in api.events["ftjob-0001"]]

    # what reached the server: both files as they are, the job as the API wants it
    assert api.counts["uploads"] == 2 and api.counts["jobs_created"] == 1
    assert api.contents["file-0001"] == run.file("train.jsonl").read_bytes()
    assert api.contents["file-0002"] == run.file("eval.jsonl").read_bytes()
    req = api.job()["request"]
    assert req["model"] == MODEL  # alias resolved from the model table
    assert req["training_file"] == "file-0001" and req["validation_file"] == "file-0002"
    assert req["method"] == {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {
                "n_epochs": "auto",
                "batch_size": "auto",
                "learning_rate_multiplier": "auto",
            }
        },
    }
    assert req["suffix"] == "greenleaf"
    assert "seed" not in req
    assert_no_key_in(run.path)

    # `distill eval` picks the new model and its base straight from the run
    from distill.stages.evaluate import plan_models

    plan = plan_models(run)
    assert (plan.student, plan.base) == (f"openai:{fine_tuned}", f"openai:{MODEL}")


def test_flags_reach_the_job(run, api):
    r = train(
        run,
        api,
        "--yes",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--lr-multiplier",
        "0.5",
        "--seed",
        "7",
        "--suffix",
        "My Shop: v2!",
    )
    assert r.exit_code == 0, r.output
    assert "epochs 2," in r.output
    req = api.job()["request"]
    assert req["method"]["supervised"]["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": 4,
        "learning_rate_multiplier": 0.5,
    }
    assert req["seed"] == 7
    assert req["suffix"] == "my-shop-v2"


def test_rerun_never_uploads_twice_nor_starts_a_duplicate_job(run, api):
    assert train(run, api, "--yes").exit_code == 0
    again = train(run, api, "--yes")
    assert again.exit_code == 0, again.output
    assert "Already trained" in again.output
    assert api.counts["uploads"] == 2 and api.counts["jobs_created"] == 1
    # new settings: a new job on the same uploaded files
    other = train(run, api, "--yes", "--epochs", "3")
    assert other.exit_code == 0, other.output
    assert "already uploaded as file-0001" in other.output
    assert api.counts["uploads"] == 2 and api.counts["jobs_created"] == 2
    assert job_file(run)["previous_jobs"][0]["job_id"] == "ftjob-0001"


def test_no_wait_then_attach_follows_the_same_job(run, api):
    r = train(run, api, "--yes", "--no-wait")
    assert r.exit_code == 0, r.output
    assert "Started job ftjob-0001" in r.output and "--attach" in r.output
    assert run.manifest["stages"]["train"]["status"] == "running"
    # --attach needs no --base-url: job.json remembers the server
    r = CliRunner().invoke(
        cli, ["train", "--run", str(run.path), "--student", "gpt-4o-mini", "--attach"]
    )
    assert r.exit_code == 0, r.output
    assert "status: succeeded" in r.output
    assert api.counts["jobs_created"] == 1
    assert run.manifest["student"]["model"].startswith("openai:ft:")


def test_failed_job_prints_its_own_error_and_code(make_run, run):
    with ScriptedOpenAI(KEY, outcome="failed") as api:
        r = train(run, api, "--yes")
    assert r.exit_code == 1
    assert "The job failed due to an invalid training file. Expected 'messages'." in r.output
    assert "code invalid_training_file" in r.output
    assert "Traceback" not in r.output
    stage = run.manifest["stages"]["train"]
    assert stage["status"] == "failed" and stage["error_code"] == "invalid_training_file"
    assert "student" not in run.manifest


def test_cancel_cancels_the_job(run, api):
    assert train(run, api, "--yes", "--no-wait").exit_code == 0
    r = train(run, api, "--cancel")
    assert r.exit_code == 0, r.output
    assert "Cancelled job ftjob-0001" in r.output
    assert api.counts["cancels"] == 1 and api.job()["status"] == "cancelled"
    assert run.manifest["stages"]["train"]["status"] == "cancelled"
    # attaching to it says so; a plain rerun starts a fresh job on the same files
    r = train(run, api, "--attach")
    assert r.exit_code == 1 and "was cancelled" in r.output
    r = train(run, api, "--yes")
    assert r.exit_code == 0, r.output
    assert api.counts["jobs_created"] == 2 and api.counts["uploads"] == 2


def test_api_error_on_creation_reaches_the_user_verbatim_with_the_request_id(run):
    message = "Model gpt-4o-mini-2024-07-18 is not available for fine-tuning or does not exist."
    with ScriptedOpenAI(KEY, create_error=(400, "model_not_available", message)) as api:
        r = train(run, api, "--yes")
        assert r.exit_code == 1
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1
        assert message in err and "code model_not_available" in err
        assert "request id req_" in err
        assert job_file(run)["pending_create"] is None  # refused: no job to look for
        # the uploads are remembered: a rerun sends nothing again
        train(run, api, "--yes")
        assert api.counts["uploads"] == 2


def test_a_server_error_on_creation_is_not_retried_blindly(run):
    with ScriptedOpenAI(KEY, create_error=(500, "server_error", "The server had an error")) as api:
        r = train(run, api, "--yes")
        assert r.exit_code == 1
        assert "The server had an error" in r.stderr and "rerun the same command" in r.stderr
        assert api.counts["create_requests"] == 1  # no automatic retry of a paid POST
        api.create_error = None
        r = train(run, api, "--yes")
        assert r.exit_code == 0, r.output
        lookups = [
            q for q in api.requests if q["method"] == "GET" and q["path"] == "/fine_tuning/jobs"
        ]
        assert len(lookups) == 1  # it looked for a job made by the lost request first
        assert api.counts["jobs_created"] == 1 and api.counts["uploads"] == 2


def test_missing_key_is_one_line(run, api, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    r = train(run, api, "--yes")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [
        "Error: OPENAI_API_KEY is not set; export OPENAI_API_KEY=... (your key for the "
        "fine-tuning API) and rerun"
    ]
    assert api.requests == []


def test_without_a_terminal_and_without_yes_it_refuses(run, api):
    r = train(run, api)
    assert r.exit_code == 2
    assert "pass --yes" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "estimated cost" in r.output  # it still says what it would cost
    assert api.counts["uploads"] == 0


def test_asks_for_confirmation_on_a_terminal(run, api, monkeypatch):
    import distill.stages.train_hosted as th

    monkeypatch.setattr(th, "_stdin_is_terminal", lambda: True)
    r = train(run, api, input="n\n")
    assert r.exit_code == 0 and "Not started; nothing was uploaded." in r.output
    assert api.counts["uploads"] == 0
    r = train(run, api, input="y\n")
    assert r.exit_code == 0, r.output
    assert api.counts["jobs_created"] == 1


def test_invalid_training_data_is_refused_before_any_upload(make_run, api):
    bad = make_run(
        "bad",
        train__jsonl=[example(i, "train") for i in range(12)]
        + [{"messages": [{"role": "user", "content": "no reply"}]}],
        eval__jsonl=[example(i, "held-out") for i in range(10)],
    )
    r = train(bad, api, "--yes")
    assert r.exit_code == 1
    assert f"{bad.file('train.jsonl')}:13" in r.stderr
    assert "distill validate" in r.stderr
    assert api.counts["uploads"] == 0


def test_a_small_eval_file_is_only_a_warning(make_run, api):
    small = make_run(
        "small",
        train__jsonl=[example(i, "train") for i in range(12)],
        eval__jsonl=[example(i, "held-out") for i in range(3)],
    )
    r = train(small, api, "--yes", "--no-wait")
    assert r.exit_code == 0, r.output
    assert "too-few-examples" in r.output


def test_attach_or_cancel_without_a_job_says_how_to_start_one(run, api):
    r = train(run, api, "--attach")
    assert r.exit_code == 2 and "no hosted job to attach to" in r.stderr
    r = train(run, api, "--cancel")
    assert r.exit_code == 2 and "no hosted job to cancel" in r.stderr


def test_a_new_job_is_refused_while_another_one_runs(run, api):
    assert train(run, api, "--yes", "--no-wait").exit_code == 0
    r = train(run, api, "--yes", "--epochs", "5")
    assert r.exit_code == 2
    assert "still going" in r.stderr and "--cancel" in r.stderr
    assert api.counts["jobs_created"] == 1


def test_long_event_history_is_read_across_pages(run):
    with ScriptedOpenAI(KEY, steps=150) as api:
        assert train(run, api, "--yes", "--no-wait").exit_code == 0
        with api._lock:
            for _ in range(200):
                api._advance("ftjob-0001")
        r = train(run, api, "--attach")
        assert r.exit_code == 0, r.output
        folder = run.path / "train" / MODEL
        ids = [
            json.loads(line)["id"] for line in (folder / "events.jsonl").read_text().splitlines()
        ]
        assert ids == [e["id"] for e in api.events["ftjob-0001"]]
        assert len(ids) > 150
        steps = [line for line in r.output.splitlines() if line.startswith("step ")]
        assert 20 <= len(steps) <= 25  # a log gets about 20 step lines, not 150
        assert steps[-1].startswith("step 150/150")
        pages = [q for q in api.requests if q["path"].endswith("/events")]
        assert any(dict(q["query"]).get("after") for q in pages)


def test_the_key_never_reaches_output_even_when_a_server_echoes_it(run, monkeypatch):
    with ScriptedOpenAI("sk-the-server-wants-another-key") as api:
        r = train(run, api, "--yes")
    assert r.exit_code == 1
    assert "Incorrect API key provided: Bearer ***" in r.stderr
    assert "request id req_" in r.stderr
    assert_no_key_in(run.path)


def test_result_files_decode_plain_and_base64():
    from distill.stages.train_hosted import _decode_result

    assert _decode_result(RESULT_CSV.encode()) == RESULT_CSV
    assert _decode_result(base64.b64encode(RESULT_CSV.encode())) == RESULT_CSV


def test_suffix_is_made_acceptable():
    from distill.stages.train_hosted import _suffix

    assert _suffix("greenleaf") == "greenleaf"
    assert _suffix("My Shop: v2!") == "my-shop-v2"
    assert _suffix("x" * 100) == "x" * 64
    assert _suffix("!!!") is None


def test_bad_flag_values_are_one_line_errors(run, api):
    r = train(run, api, "--yes", "--epochs", "0")
    assert r.exit_code == 2 and "--epochs 0" in r.stderr
    r = train(run, api, "--yes", "--batch-size", "999")
    assert r.exit_code == 2 and "--batch-size 999" in r.stderr
    assert api.requests == []
