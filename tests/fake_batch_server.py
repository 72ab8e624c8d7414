"""A loopback OpenAI Batch API for tests and benchmarks: the chat server of
fake_openai_server.py plus files (purpose `batch`) and /v1/batches.

    with FakeBatchServer(conversation_responder, script=["expire", "complete"]) as server:
        ... distill generate --batch --base-url server.url ...
        assert server.counts["uploads"] == 1 and server.counts["batches_created"] == 2

Each GET of a batch moves it one step: validating -> in_progress -> finalizing -> its outcome,
taken in order from `script` for each batch created (then `default`):

    complete   every request answered (the output file), like the live endpoint would
    expire     the first half answered, the rest in the error file as batch_expired
    partial    every third request a 500 in the error file, the rest answered; completed
    refuse     completed, every request answered 400 context_length_exceeded
    fail       the batch fails validation (an `errors` list, no files)

`gate` ("upload" or "create") does the first such request's work, then writes a line to
`gate_log` and holds the answer back (to SIGKILL a client that has sent it but not heard
back). `create_500` makes that many batches but answers their creation with a 500.
`freeze` holds batches at in_progress; POST .../cancel makes the next GET `cancelled` with
the first half answered. Answers use the responder and the prompt-cache simulation of the
chat server, so a batch's usage is what the live path's would be.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai_server import FakeOpenAIServer, main  # noqa: E402


def _error(message: str, code: str | None = None, status: int = 400) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}},
        status=status,
    )


class FakeBatchServer(FakeOpenAIServer):
    def __init__(
        self, *args: Any, script: list[str] | None = None, default: str = "complete", **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.batch_script = list(script or [])
        self.default = default
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, str] = {}
        self.freeze = threading.Event()
        self.gate: str | None = None
        self.create_500 = 0  # this many batch creations answer 500 after making the batch
        self.gate_log: Path | None = None
        self._ids = itertools.count(1)

    async def _held(self, kind: str) -> None:
        """At the gate: the work is done; tell the test and never answer this request."""
        if self.gate != kind:
            return
        self.gate = None
        if self.gate_log is not None:
            with open(self.gate_log, "a") as f:
                f.write(f"{kind}\n")
        await asyncio.sleep(60)

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files", self._list_files)
        app.router.add_get("/v1/files/{id}", self._file)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{id}", self._retrieve)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)
        return app

    # -- files ------------------------------------------------------------------------------
    def _new_file(self, data: bytes, name: str, purpose: str) -> dict[str, Any]:
        fid = f"file-{next(self._ids):04d}"
        self.files[fid] = {
            "id": fid,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": name,
            "purpose": purpose,
            "status": "processed",
        }
        self.contents[fid] = data
        return self.files[fid]

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or not hasattr(upload, "file"):
            return _error("purpose must be batch and a file is required")
        data = upload.file.read()  # type: ignore[union-attr]
        with self._lock:
            self.counts["uploads"] += 1
            obj = self._new_file(data, str(upload.filename), "batch")  # type: ignore[union-attr]
        await self._held("upload")
        return web.json_response(obj)

    async def _list_files(self, request: web.Request) -> web.Response:
        purpose = request.query.get("purpose")
        files = [f for f in reversed(self.files.values()) if purpose in (None, f["purpose"])]
        return web.json_response({"object": "list", "data": files, "has_more": False})

    async def _file(self, request: web.Request) -> web.Response:
        fid = request.match_info["id"]
        if fid not in self.files:
            return _error(f"No such File object: {fid}", status=404)
        return web.json_response(self.files[fid])

    async def _content(self, request: web.Request) -> web.Response:
        fid = request.match_info["id"]
        if fid not in self.contents:
            return _error(f"No such File object: {fid}", status=404)
        self.counts["downloads"] += 1
        return web.Response(body=self.contents[fid], content_type="application/octet-stream")

    # -- batches ----------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        req = await request.json()
        fid = req.get("input_file_id")
        if fid not in self.files or req.get("endpoint") != "/v1/chat/completions":
            return _error(f"invalid input_file_id {fid} or endpoint")
        lines = [json.loads(x) for x in self.contents[fid].decode().splitlines() if x.strip()]
        ids = [x["custom_id"] for x in lines]
        if len(set(ids)) != len(ids):
            return _error("duplicate custom_id in the input file", "duplicate_custom_id")
        with self._lock:
            self.counts["batches_created"] += 1
            bid = f"batch_{next(self._ids):04d}"
            self.outcomes[bid] = self.batch_script.pop(0) if self.batch_script else self.default
            self.batches[bid] = {
                "id": bid,
                "object": "batch",
                "endpoint": "/v1/chat/completions",
                "errors": None,
                "input_file_id": fid,
                "completion_window": req.get("completion_window"),
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": int(time.time()),
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                "metadata": req.get("metadata"),
            }
        await self._held("create")
        if self.create_500:  # made, but the client hears a 500
            self.create_500 -= 1
            return _error("The server had an error", "server_error", status=500)
        return web.json_response(self.batches[bid])

    async def _list_batches(self, request: web.Request) -> web.Response:
        data = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after:
            ids = [b["id"] for b in data]
            data = data[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit", 20))
        return web.json_response(
            {"object": "list", "data": data[:limit], "has_more": len(data) > limit}
        )

    async def _retrieve(self, request: web.Request) -> web.Response:
        bid = request.match_info["id"]
        if bid not in self.batches:
            return _error(f"No batch found with id '{bid}'.", status=404)
        with self._lock:
            self.counts["batch_gets"] += 1
            self._advance(self.batches[bid])
        return web.json_response(self.batches[bid])

    async def _cancel(self, request: web.Request) -> web.Response:
        bid = request.match_info["id"]
        if bid not in self.batches:
            return _error(f"No batch found with id '{bid}'.", status=404)
        with self._lock:
            self.counts["cancels"] += 1
            b = self.batches[bid]
            if b["status"] in ("validating", "in_progress", "finalizing"):
                b["status"] = "cancelling"
        return web.json_response(b)

    def _advance(self, b: dict[str, Any]) -> None:
        status = b["status"]
        if status == "validating":
            b["status"] = "in_progress"
        elif status == "in_progress" and not self.freeze.is_set():
            b["status"] = "finalizing"
        elif status == "finalizing":
            self._finish(b, self.outcomes[b["id"]])
        elif status == "cancelling":
            self._finish(b, "cancel")

    def _finish(self, b: dict[str, Any], outcome: str) -> None:
        if outcome == "fail":
            b["status"] = "failed"
            b["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_request", "message": "model not found", "line": 1}],
            }
            return
        lines = [json.loads(x) for x in self.contents[b["input_file_id"]].decode().splitlines()]
        out, err = [], []
        for i, line in enumerate(lines):
            rid = f"batch_req_{next(self._ids):04d}"
            cut = outcome in ("expire", "cancel") and i >= len(lines) // 2
            if cut or (outcome == "partial" and i % 3 == 2):
                code = {"expire": "batch_expired", "cancel": "batch_cancelled"}.get(outcome)
                response = None if cut else {"status_code": 500, "request_id": rid, "body": {}}
                error = {"code": code, "message": f"not run: {outcome}"} if cut else None
                if not cut:
                    response["body"] = {"error": {"message": "server error", "code": None}}
                err.append(
                    {
                        "id": rid,
                        "custom_id": line["custom_id"],
                        "response": response,
                        "error": error,
                    }
                )
                continue
            if outcome == "refuse":
                error = {
                    "message": "maximum context length exceeded",
                    "code": "context_length_exceeded",
                }
                response = {"status_code": 400, "request_id": rid, "body": {"error": error}}
                out.append(
                    {"id": rid, "custom_id": line["custom_id"], "response": response, "error": None}
                )
                continue
            body = self.completion(line["body"])
            out.append(
                {
                    "id": rid,
                    "custom_id": line["custom_id"],
                    "response": {"status_code": 200, "request_id": rid, "body": body},
                    "error": None,
                }
            )
        for rows, key, kind in (
            (out, "output_file_id", "output"),
            (err, "error_file_id", "errors"),
        ):
            if rows:
                data = "".join(json.dumps(r) + "\n" for r in rows).encode()
                b[key] = self._new_file(data, f"{b['id']}_{kind}.jsonl", "batch_output")["id"]
        b["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
        b["status"] = {"expire": "expired", "cancel": "cancelled"}.get(outcome, "completed")


if __name__ == "__main__":
    main(FakeBatchServer, __doc__)
