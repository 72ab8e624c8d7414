"""Contract tests: every call `distill train --student gpt-4o-mini` makes is one OpenAI's own
API description allows, with the body it requires.

The server is Prism's mock generated from ../shared/openai/openapi.yaml: it answers with
spec-shaped objects and rejects (422/400/401/404) any request the spec does not allow. A
recording proxy in front of it lets the test see every call and its status, and rewrites a
job's `status` to other values the spec allows so the follow loop's calls run too.

Needs Node and Prism: `npm install --prefix /tmp/prism @stoplight/prism-cli@5.14.2`, or
DISTILL_PRISM=/path/to/prism; skipped with that reason when absent.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from openai_mock import PRISM_INSTALL, Prism, SpecProxy, find_prism, find_spec, slice_spec
from test_train_hosted import KEY, MODEL, assert_no_key_in, example

from distill.cli import cli

SPEC = find_spec()
PRISM = find_prism()

pytestmark = [
    pytest.mark.skipif(SPEC is None, reason="OpenAI's openapi.yaml not found in ../shared/openai/"),
    pytest.mark.skipif(PRISM is None, reason=f"Node/Prism not installed: {PRISM_INSTALL}"),
]

# (method, path pattern) of every operation the hosted trainer may call, as the spec names it
ALLOWED = {
    ("POST", "/files"),  # createFile
    ("GET", "/files/{id}"),  # retrieveFile
    ("GET", "/files/{id}/content"),  # downloadFile
    ("POST", "/fine_tuning/jobs"),  # createFineTuningJob
    ("GET", "/fine_tuning/jobs"),  # listPaginatedFineTuningJobs
    ("GET", "/fine_tuning/jobs/{id}"),  # retrieveFineTuningJob
    ("GET", "/fine_tuning/jobs/{id}/events"),  # listFineTuningEvents
    ("POST", "/fine_tuning/jobs/{id}/cancel"),  # cancelFineTuningJob
}


def operation(method: str, path: str) -> tuple[str, str]:
    seg = [s for s in path.split("/") if s]
    if seg[:1] == ["files"] and len(seg) >= 2:
        seg[1] = "{id}"
    if seg[:2] == ["fine_tuning", "jobs"] and len(seg) >= 3:
        seg[2] = "{id}"
    return method, "/" + "/".join(seg)


@pytest.fixture(scope="module")
def prism(tmp_path_factory):
    assert PRISM and SPEC
    folder = tmp_path_factory.mktemp("prism")
    try:
        spec = slice_spec(SPEC, folder / "fine-tuning.openapi.json")
    except ImportError:  # no PyYAML: Prism reads the whole spec itself (20 s instead of 3)
        spec = SPEC
    server = Prism(PRISM, spec, folder / "prism.log")
    yield server
    server.stop()


@pytest.fixture
def proxy(prism):
    with SpecProxy(prism.url) as p:
        yield p


@pytest.fixture(autouse=True)
def fast_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("DISTILL_POLL_INTERVAL", "0.005")
    monkeypatch.setenv("DISTILL_POLL_MAX", "0.02")


@pytest.fixture
def run(make_run):
    return make_run(
        "greenleaf",
        train__jsonl=[example(i, "train") for i in range(12)],
        eval__jsonl=[example(i, "held-out") for i in range(10)],
    )


def train(run, proxy, *args: str):
    result = CliRunner().invoke(
        cli,
        ["train", "--run", str(run.path), "--student", "gpt-4o-mini", "--base-url", proxy.url]
        + list(args),
    )
    assert KEY not in result.output
    return result


def assert_all_allowed(proxy: SpecProxy) -> None:
    assert proxy.calls, "no call reached the mock"
    for call in proxy.calls:
        op = operation(call["method"], call["path"])
        assert op in ALLOWED, call
        assert call["status"] < 400, f"the spec mock refused {op}: {call['answer']}"


def test_every_call_of_a_whole_training_is_one_the_spec_allows(run, proxy):
    # start: two uploads and the job
    r = train(run, proxy, "--yes", "--no-wait")
    assert r.exit_code == 0, r.output
    ops = [operation(c["method"], c["path"]) for c in proxy.calls]
    assert ops == [("POST", "/files"), ("POST", "/files"), ("POST", "/fine_tuning/jobs")]
    assert "Started job" in r.output

    # follow to success: job, events, the result file's metadata and content
    proxy.force_status = "succeeded"
    r = train(run, proxy, "--attach")
    assert r.exit_code == 0, r.output
    ops = {operation(c["method"], c["path"]) for c in proxy.calls}
    assert {
        ("GET", "/fine_tuning/jobs/{id}"),
        ("GET", "/fine_tuning/jobs/{id}/events"),
        ("GET", "/files/{id}"),
        ("GET", "/files/{id}/content"),
    } <= ops
    assert run.manifest["student"]["base"] == f"openai:{MODEL}"

    # a failed job: the spec's error object is shown
    proxy.force_status = "failed"
    r = train(run, proxy, "--attach")
    assert r.exit_code == 1 and "failed" in r.output

    # cancel a running job
    job = json.loads((run.path / "train" / MODEL / "job.json").read_text())
    job["status"] = "running"
    (run.path / "train" / MODEL / "job.json").write_text(json.dumps(job))
    proxy.force_status = "cancelled"
    r = train(run, proxy, "--cancel")
    assert r.exit_code == 0, r.output
    assert ("POST", "/fine_tuning/jobs/{id}/cancel") in {
        operation(c["method"], c["path"]) for c in proxy.calls
    }
    assert_all_allowed(proxy)
    assert_no_key_in(run.path)


def test_the_recovery_lookup_of_a_created_job_is_allowed(proxy):
    from distill.stages.train_hosted import Api, Out

    api = Api(KEY, proxy.url, Out(KEY))
    api.find_created("abc123", {"since": 0, "training_file": "file-1"})
    assert_all_allowed(proxy)
    (call,) = proxy.calls
    assert operation(call["method"], call["path"]) == ("GET", "/fine_tuning/jobs")
    assert parse_qs(call["query"])["metadata[distill_request]"] == ["abc123"]


def test_the_mock_does_refuse_what_the_spec_forbids(prism):
    """The contract above can fail: a body the spec forbids is refused."""
    u = urlsplit(prism.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    bad = {"model": MODEL, "training_file": "file-1", "method": {"type": "bogus"}}
    conn.request(
        "POST",
        "/fine_tuning/jobs",
        body=json.dumps(bad),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    assert resp.status == 422, resp.read()


def test_a_dpo_job_is_one_the_spec_allows(make_run, proxy):
    """`distill train --method dpo`: the pairs upload and a job with method dpo and its beta."""
    from test_pairs_dpo import preference_lines

    run = make_run("prefs", pairs__jsonl=preference_lines(12))
    r = train(run, proxy, "--method", "dpo", "--beta", "0.3", "--yes", "--no-wait")
    assert r.exit_code == 0, r.output
    ops = [operation(c["method"], c["path"]) for c in proxy.calls]
    assert ops == [("POST", "/files"), ("POST", "/fine_tuning/jobs")]  # no validation file
    assert_all_allowed(proxy)
    body = json.loads(proxy.calls[-1]["body"])
    assert body["method"]["type"] == "dpo"
    assert body["method"]["dpo"]["hyperparameters"]["beta"] == 0.3
    assert '"preferred_output"' in proxy.calls[0]["body"]  # the uploaded file is the pairs
    assert (run.path / "train" / f"{MODEL}-dpo" / "job.json").exists()


def test_the_mock_refuses_a_dpo_beta_out_of_range(prism):
    """The DPO contract can fail too: beta above 2 is refused by the spec."""
    u = urlsplit(prism.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    bad = {
        "model": MODEL,
        "training_file": "file-1",
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 5}}},
    }
    conn.request(
        "POST",
        "/fine_tuning/jobs",
        body=json.dumps(bad),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    assert resp.status == 422, resp.read()
