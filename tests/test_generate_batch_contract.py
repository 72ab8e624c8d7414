"""Contract tests: every call `distill generate --batch` makes (files with purpose batch,
/v1/batches create, retrieve, list and cancel, file content download) is one OpenAI's own API
description allows, with the body it requires.

The server is Prism's mock generated from ../shared/openai/openapi.yaml (see
test_train_hosted_contract.py); a recording proxy in front of it sees every call and its
status and can set a batch's `status` to another value the spec allows.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from openai_mock import PRISM_INSTALL, Prism, SpecProxy, find_prism, find_spec, slice_spec
from test_generate import seeds_file  # noqa: F401

from distill.cli import cli
from distill.hosted.batches import BatchApi
from distill.hosted.out import Out

SPEC = find_spec()
PRISM = find_prism()
KEY = "sk-contract-test-key-0123"

pytestmark = [
    pytest.mark.skipif(SPEC is None, reason="OpenAI's openapi.yaml not found in ../shared/openai/"),
    pytest.mark.skipif(PRISM is None, reason=f"Node/Prism not installed: {PRISM_INSTALL}"),
]

ALLOWED = {
    ("POST", "/files"),  # createFile
    ("GET", "/files"),  # listFiles
    ("GET", "/files/{id}/content"),  # downloadFile
    ("POST", "/batches"),  # createBatch
    ("GET", "/batches"),  # listBatches
    ("GET", "/batches/{id}"),  # retrieveBatch
    ("POST", "/batches/{id}/cancel"),  # cancelBatch
}


def operation(method: str, path: str) -> tuple[str, str]:
    seg = [s for s in path.split("/") if s]
    if seg[:1] in (["files"], ["batches"]) and len(seg) >= 2:
        seg[1] = "{id}"
    return method, "/" + "/".join(seg)


@pytest.fixture(scope="module")
def prism(tmp_path_factory):
    assert PRISM and SPEC
    folder = tmp_path_factory.mktemp("prism")
    try:
        spec = slice_spec(SPEC, folder / "batch.openapi.json", ("/files", "/batches"))
    except ImportError:
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
    monkeypatch.setenv("DISTILL_BATCH_GATHER_S", "0.05")


def assert_all_allowed(proxy: SpecProxy) -> list[tuple[str, str]]:
    assert proxy.calls, "no call reached the mock"
    ops = []
    for call in proxy.calls:
        op = operation(call["method"], call["path"])
        assert op in ALLOWED, call
        assert call["status"] < 400, f"the spec mock refused {op}: {call['answer']}"
        ops.append(op)
    return ops


def test_a_batch_run_uploads_creates_and_follows_as_the_spec_allows(seeds_file, proxy):  # noqa: F811
    # the mock's batch is made to fail with no files, so the run ends after one poll
    proxy.force_status = "failed"
    proxy.force_fields = {"output_file_id": None, "error_file_id": None}
    r = CliRunner().invoke(
        cli,
        ["generate", "--seeds", str(seeds_file), "--n", "3", "--teacher", "openai:gpt-4o-mini"]
        + ["--base-url", proxy.url, "--batch"],
    )
    assert KEY not in r.output
    assert r.exit_code == 1 and "failed" in r.output, r.output
    ops = assert_all_allowed(proxy)
    assert ops[:3] == [("POST", "/files"), ("POST", "/batches"), ("GET", "/batches/{id}")]
    create = next(c for c in proxy.calls if operation(c["method"], c["path"]) == ops[1])
    assert create["status"] == 200


def test_lookups_download_and_cancel_are_calls_the_spec_allows(proxy):
    api = BatchApi(KEY, proxy.url, Out(KEY))
    api.find_file("shop-0123456789abcdef.jsonl", 100)
    api.find_batch("file-abc123", "0" * 64)
    api.content("file-abc123")
    proxy.force_status = "cancelling"
    assert api.cancel("batch_abc123").status == "cancelling"
    ops = assert_all_allowed(proxy)
    assert set(ops) == {
        ("GET", "/files"),
        ("GET", "/batches"),
        ("GET", "/files/{id}/content"),
        ("POST", "/batches/{id}/cancel"),
    }
    listing = next(c for c in proxy.calls if c["path"] == "/files")
    assert parse_qs(listing["query"])["purpose"] == ["batch"]


def test_the_mock_does_refuse_a_batch_the_spec_forbids(prism):
    """The contract above can fail: an endpoint the spec does not list is refused."""
    u = urlsplit(prism.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    bad = {"input_file_id": "file-1", "endpoint": "/v1/chat", "completion_window": "24h"}
    conn.request(
        "POST",
        "/batches",
        body=json.dumps(bad),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    assert resp.status == 422, resp.read()
