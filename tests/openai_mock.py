"""Loopback stand-ins for OpenAI's fine-tuning API, for tests.

`ScriptedOpenAI`: an http.server in a thread on 127.0.0.1:0 that keeps files and jobs in
memory and walks each job through validating_files -> queued -> running -> succeeded (or
failed) one step per GET of the job, with events (messages and step metrics) and a result
file. Its counters (uploads, jobs created, cancels) are what tests assert on; `freeze`
holds jobs at `running`, `create_gate` withholds the answer to a job creation (to kill a
client at that moment).

`SpecProxy`: forwards to a mock server generated from OpenAI's OpenAPI description (Prism),
records every call and its status, and can rewrite a job's `status` to another value the
spec allows, so a client's whole follow loop runs against spec-shaped answers.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import http.client
import itertools
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

RESULT_CSV = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,2.1,0.4,2.3,0.38\n2,1.2,0.6,1.4,0.55\n3,0.7,0.8,0.9,0.75\n"


class ScriptedOpenAI:
    """A fake fine-tuning API whose jobs follow a script; see the module docstring."""

    def __init__(
        self,
        key: str,
        *,
        outcome: str = "succeeded",
        steps: int = 3,
        create_error: tuple[int, str, str] | None = None,
        base64_results: bool = True,
    ) -> None:
        self.key = key
        self.outcome = outcome  # succeeded | failed
        self.steps = steps
        self.create_error = create_error  # (http status, code, message)
        self.base64_results = base64_results
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.ticks: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.freeze = threading.Event()  # set: jobs stay at `running`
        self.create_gate: str | None = None  # None | "before" | "after"
        self.gate_open = threading.Event()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> ScriptedOpenAI:
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                mock._handle(self, "GET")

            def do_POST(self) -> None:
                mock._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate_open.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def job(self) -> dict[str, Any]:
        """The only job (tests that create one)."""
        assert len(self.jobs) == 1, self.jobs
        return next(iter(self.jobs.values()))

    # -- routing ------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        path = parts.path.removeprefix("/v1")
        query = parse_qsl(parts.query)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        rid = f"req_{next(self._ids)}"
        with self._lock:
            self.requests.append(
                {"method": method, "path": path, "query": query, "headers": dict(h.headers)}
            )
        if h.headers.get("Authorization") != f"Bearer {self.key}":
            # a careless server that echoes the key it was sent
            self._send(
                h,
                401,
                _error(
                    f"Incorrect API key provided: {h.headers.get('Authorization')}",
                    "invalid_api_key",
                ),
                rid,
            )
            return
        seg = [s for s in path.split("/") if s]
        try:
            if method == "POST" and seg == ["files"]:
                status, obj = self._upload(h.headers.get("Content-Type", ""), body)
            elif method == "GET" and len(seg) == 2 and seg[0] == "files":
                status, obj = self._file(seg[1])
            elif method == "GET" and len(seg) == 3 and seg[0] == "files" and seg[2] == "content":
                data = self.contents.get(seg[1])
                if data is None:
                    status, obj = 404, _error(f"No such File object: {seg[1]}", None)
                else:
                    h.send_response(200)
                    h.send_header("Content-Type", "application/octet-stream")
                    h.send_header("Content-Length", str(len(data)))
                    h.send_header("x-request-id", rid)
                    h.end_headers()
                    h.wfile.write(data)
                    return
            elif method == "POST" and seg == ["fine_tuning", "jobs"]:
                status, obj = self._create(json.loads(body or b"{}"))
                if status == 0:  # the gate dropped the request
                    return
            elif method == "GET" and seg == ["fine_tuning", "jobs"]:
                status, obj = self._list_jobs(query)
            elif method == "GET" and len(seg) == 3 and seg[:2] == ["fine_tuning", "jobs"]:
                status, obj = self._retrieve(seg[2])
            elif method == "GET" and len(seg) == 4 and seg[3] == "events":
                status, obj = self._events(seg[2], dict(query))
            elif method == "POST" and len(seg) == 4 and seg[3] == "cancel":
                status, obj = self._cancel(seg[2])
            else:
                status, obj = 404, _error(f"Invalid URL ({method} {path})", None)
        except Exception as e:  # noqa: BLE001 - a test server reports, never dies
            status, obj = 500, _error(f"mock failure: {e!r}", "server_error")
        self._send(h, status, obj, rid)

    def _send(self, h: BaseHTTPRequestHandler, status: int, obj: Any, rid: str) -> None:
        data = json.dumps(obj).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.send_header("x-request-id", rid)
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            pass  # the client is gone (killed)

    # -- endpoints ----------------------------------------------------------------------------
    def _upload(self, ctype: str, body: bytes) -> tuple[int, Any]:
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + body
        )
        fields: dict[str, Any] = {}
        filename = None
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                filename = part.get_filename()
                fields[name] = part.get_payload(decode=True)
            else:
                fields[name] = part.get_payload(decode=True).decode()
        if fields.get("purpose") != "fine-tune" or "file" not in fields:
            return 400, _error("purpose must be fine-tune and a file is required", None)
        with self._lock:
            self.counts["uploads"] += 1
            fid = f"file-{len(self.files) + 1:04d}"
            self.files[fid] = {
                "id": fid,
                "object": "file",
                "bytes": len(fields["file"]),
                "created_at": int(time.time()),
                "filename": filename or "upload.jsonl",
                "purpose": "fine-tune",
                "status": "processed",
            }
            self.contents[fid] = fields["file"]
        return 200, self.files[fid]

    def _file(self, fid: str) -> tuple[int, Any]:
        if fid not in self.files:
            return 404, _error(f"No such File object: {fid}", None)
        return 200, self.files[fid]

    def _create(self, req: dict[str, Any]) -> tuple[int, Any]:
        self.counts["create_requests"] += 1
        if self.create_gate == "before":
            self.gate_open.wait(30)
            return 0, None
        if self.create_error:
            status, code, message = self.create_error
            return status, _error(message, code)
        for f in ("training_file", "validation_file"):
            if req.get(f) and req[f] not in self.files:
                return 400, _error(f"invalid {f}: {req[f]}", "invalid_file", f)
        hp = ((req.get("method") or {}).get("supervised") or {}).get("hyperparameters") or {}
        with self._lock:
            self.counts["jobs_created"] += 1
            jid = f"ftjob-{len(self.jobs) + 1:04d}"
            self.jobs[jid] = {
                "id": jid,
                "object": "fine_tuning.job",
                "created_at": int(time.time()),
                "error": None,
                "fine_tuned_model": None,
                "finished_at": None,
                "hyperparameters": hp,
                "model": req["model"],
                "organization_id": "org-test",
                "result_files": [],
                "status": "validating_files",
                "trained_tokens": None,
                "training_file": req["training_file"],
                "validation_file": req.get("validation_file"),
                "seed": req.get("seed", 42),
                "suffix": req.get("suffix"),
                "metadata": req.get("metadata"),
                "method": req.get("method"),
                "estimated_finish": None,
                "request": req,
            }
            self.events[jid] = []
            self._event(jid, "Validating training file: " + req["training_file"])
        if self.create_gate == "after":
            self.gate_open.wait(30)
            return 0, None
        return 200, self._public(jid)

    def _list_jobs(self, query: list[tuple[str, str]]) -> tuple[int, Any]:
        filters = {k[9:-1]: v for k, v in query if k.startswith("metadata[")}
        jobs = [
            self._public(j)
            for j, job in sorted(self.jobs.items(), reverse=True)
            if all((job.get("metadata") or {}).get(k) == v for k, v in filters.items())
        ]
        return 200, {"object": "list", "data": jobs, "has_more": False}

    def _retrieve(self, jid: str) -> tuple[int, Any]:
        if jid not in self.jobs:
            return 404, _error(f"Could not find fine-tune: {jid}", "fine_tune_not_found")
        with self._lock:
            self.counts["retrieves"] += 1
            self._advance(jid)
        return 200, self._public(jid)

    def _advance(self, jid: str) -> None:
        job = self.jobs[jid]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return
        tick = self.ticks[jid]
        if self.freeze.is_set() and job["status"] == "running" and tick >= 4:
            return
        self.ticks[jid] += 1
        if tick == 0:
            job["status"] = "queued"
            self._event(jid, "Files validated, moving job to queued state")
        elif tick == 1:
            job["status"] = "running"
            self._event(jid, "Fine-tuning job started")
        elif tick - 1 <= self.steps:
            step = tick - 1
            loss = round(2.0 / step, 4)
            self._event(
                jid,
                f"Step {step}/{self.steps}: training loss={loss}",
                type_="metrics",
                data={
                    "step": step,
                    "train_loss": loss,
                    "valid_loss": loss + 0.1,
                    "total_steps": self.steps,
                    "train_mean_token_accuracy": 0.5,
                },
            )
        elif self.outcome == "failed":
            job["status"] = "failed"
            job["finished_at"] = int(time.time())
            job["error"] = {
                "code": "invalid_training_file",
                "message": "The job failed due to an invalid training file. Expected 'messages'.",
                "param": "training_file",
            }
            self._event(jid, "The job failed", level="error")
        else:
            rid = f"file-{len(self.files) + 1:04d}"
            raw = RESULT_CSV.encode()
            self.contents[rid] = base64.b64encode(raw) if self.base64_results else raw
            self.files[rid] = {
                "id": rid,
                "object": "file",
                "bytes": len(self.contents[rid]),
                "created_at": int(time.time()),
                "filename": "step_metrics.csv",
                "purpose": "fine-tune-results",
                "status": "processed",
            }
            job.update(
                status="succeeded",
                finished_at=int(time.time()),
                fine_tuned_model=f"ft:{job['model']}:org-test:{job.get('suffix') or 'x'}:AbC123",
                trained_tokens=12345,
                result_files=[rid],
            )
            self._event(jid, f"New fine-tuned model created: {job['fine_tuned_model']}")
            self._event(jid, "The job has successfully completed")

    def _events(self, jid: str, query: dict[str, str]) -> tuple[int, Any]:
        if jid not in self.jobs:
            return 404, _error(f"Could not find fine-tune: {jid}", "fine_tune_not_found")
        newest_first = list(reversed(self.events[jid]))
        after = query.get("after")
        if after:
            ids = [e["id"] for e in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        limit = int(query.get("limit", 20))
        page = newest_first[:limit]
        return 200, {"object": "list", "data": page, "has_more": len(newest_first) > limit}

    def _cancel(self, jid: str) -> tuple[int, Any]:
        if jid not in self.jobs:
            return 404, _error(f"Could not find fine-tune: {jid}", "fine_tune_not_found")
        with self._lock:
            self.counts["cancels"] += 1
            self.jobs[jid]["status"] = "cancelled"
            self._event(jid, "Fine-tuning job cancelled")
        return 200, self._public(jid)

    def _event(
        self,
        jid: str,
        message: str,
        *,
        type_: str = "message",
        data: dict[str, Any] | None = None,
        level: str = "info",
    ) -> None:
        evs = self.events[jid]
        evs.append(
            {
                "object": "fine_tuning.job.event",
                "id": f"ftevent-{jid[-4:]}-{len(evs) + 1:04d}",
                "created_at": int(time.time()) + len(evs),
                "level": level,
                "message": message,
                "type": type_,
                "data": data or {},
            }
        )

    def _public(self, jid: str) -> dict[str, Any]:
        return {k: v for k, v in self.jobs[jid].items() if k not in ("request", "suffix")}


def _error(message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


# -- Prism (a mock generated from OpenAI's OpenAPI description) -------------------------------

PRISM_VERSION = "5.14.2"  # the last release that supports Node 20 (5.15+ needs Node 24)
PRISM_INSTALL = f"npm install --prefix /tmp/prism @stoplight/prism-cli@{PRISM_VERSION}"


def find_spec() -> Path | None:
    """OpenAI's openapi.yaml: $DISTILL_OPENAPI_SPEC, else ../shared/openai/ beside the repo."""
    env = os.environ.get("DISTILL_OPENAPI_SPEC")
    candidates = [Path(env)] if env else []
    root = Path(__file__).resolve().parent.parent
    candidates += [root.parent / "shared" / "openai" / "openapi.yaml"]
    return next((p for p in candidates if p.is_file()), None)


FINE_TUNING_PATHS = ("/files", "/fine_tuning/jobs")


def slice_spec(spec: Path, out: Path, prefixes: tuple[str, ...] = FINE_TUNING_PATHS) -> Path:
    """The spec cut down to the paths under `prefixes` and every component they reference,
    unchanged: the same contract for those operations, and Prism starts in seconds, not 20."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(spec, encoding="utf-8") as f:
        full = yaml.load(f, Loader=loader)
    paths = {
        p: item
        for p, item in full["paths"].items()
        if any(p == pre or p.startswith(pre + "/") for pre in prefixes)
    }
    components: dict[str, dict[str, Any]] = {}
    todo: list[Any] = [paths]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/"):
                _, _, kind, name = ref.split("/", 3)
                if name not in components.setdefault(kind, {}):
                    target = full["components"][kind][name]
                    components[kind][name] = target
                    todo.append(target)
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    components.setdefault("securitySchemes", full["components"].get("securitySchemes", {}))
    sliced = {k: v for k, v in full.items() if k not in ("paths", "components", "webhooks")}
    sliced.update(paths=paths, components=components)
    out.write_text(json.dumps(sliced), encoding="utf-8")
    return out


def find_prism() -> str | None:
    """The prism binary: $DISTILL_PRISM, /tmp/prism (the install command above), or PATH."""
    env = os.environ.get("DISTILL_PRISM")
    if env:
        return env if Path(env).exists() else None
    if not shutil.which("node"):
        return None
    local = Path("/tmp/prism/node_modules/.bin/prism")
    if local.exists():
        return str(local)
    return shutil.which("prism")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prism:
    """`prism mock SPEC` on a loopback port, started once and stopped at exit."""

    def __init__(self, binary: str, spec: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, "mock", str(spec), "-h", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prism exited: {log.read_text()[-2000:]}")
            if "Prism is listening" in log.read_text(errors="replace"):
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("prism did not start within 120 s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


class SpecProxy:
    """Forwards every request to Prism and records (method, path, HTTP status, answer).

    `force_status` rewrites `status` in answers about a job or a batch to another value the
    spec's enum allows (`force_fields` sets more of a batch's fields); `force_error`, when the forced status is failed, sets the job's error object."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.calls: list[dict[str, Any]] = []
        self.force_status: str | None = None
        self.force_fields: dict[str, Any] = {}  # set in a batch's answers with force_status
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> SpecProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self, "GET")

            def do_POST(self) -> None:
                proxy._forward(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _forward(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "connection")}
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        conn.request(method, h.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("Content-Type", "")
        conn.close()
        path = urlsplit(h.path).path
        seg = [s for s in path.split("/") if s]
        job = seg[:2] == ["fine_tuning", "jobs"] and len(seg) in (3, 4)
        batch = seg[:1] == ["batches"] and len(seg) in (2, 3)  # a batch, or its cancel
        if (
            self.force_status
            and resp.status == 200
            and (job or batch)
            and (len(seg) == 2 + job or seg[-1] == "cancel")
        ):
            obj = json.loads(data)
            obj["status"] = self.force_status
            obj.update(self.force_fields if batch else {})
            data = json.dumps(obj).encode()
        self.calls.append(
            {
                "method": method,
                "path": path,
                "query": urlsplit(h.path).query,
                "status": resp.status,
                "answer": data[:2000].decode(errors="replace"),
                "body": (body or b"")[:20000].decode(errors="replace"),
            }
        )
        h.send_response(resp.status)
        h.send_header("Content-Type", ctype or "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
