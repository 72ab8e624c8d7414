"""`distill generate --batch`: the teacher's requests go through OpenAI's Batch API (half the
price, answers within 24 h) instead of one HTTP call each.

Nothing else about generation changes. `BatchTeacher` is the teacher's backend with one
difference: a completion asked for while writing a plan point is not sent at once but
gathered with the others into a round; when no new request has come for a moment (every
worker is waiting), the round is written as a Batch input file (one line per request,
custom_id = the plan point and the request's hash, the body the live path would send),
uploaded, made a batch and followed. Its answers come back through the same re-ask loop,
validation, calls.sqlite, budget and rejected.jsonl as live answers; what fails validation is
re-asked in the next round, bounded by --max-reasks.

Everything is recorded in outputs/<run>/batch/ before the step that needs it: the input
file and its sha256 before the upload, the file id before the batch is created, the batch id
as soon as it is known (batches.json, written atomically). A rerun after a SIGKILL at any
moment finds each request in the batch that already holds it (or the upload or batch a
killed run made before it saw the answer), so nothing is uploaded or submitted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shlex
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from distill.backends.chat import Backend, Call
from distill.backends.openai_backend import OpenAIBackend, usage_of
from distill.backends.reply import InvalidOutput, Reply, Usage
from distill.errors import BackendError, UsageError
from distill.hosted.api import ApiError, TransientError
from distill.hosted.batches import (
    MAX_BYTES,
    MAX_REQUESTS,
    TERMINAL,
    BatchApi,
    batch_dict,
)
from distill.hosted.follow import POLL_FAILURES, poll_settings
from distill.hosted.jobs import JobFile, Uploads, exclusive
from distill.hosted.out import Out
from distill.models import batch_price
from distill.runs import Run, atomic_file, read_jsonl, sha256_text
from distill.stages.generate.plan import current_point

GATHER_S = 1.0  # a round is sent once no request has come for this long (all workers wait)
RETRIES = 2  # more rounds for a request a batch did not run (expired, a 5xx inside it)
TRANSIENT_CODES = {"batch_expired", "batch_cancelled", "rate_limit_exceeded", "server_error"}


def gather_s() -> float:
    try:
        return float(os.environ.get("DISTILL_BATCH_GATHER_S", GATHER_S))
    except ValueError:
        raise UsageError("DISTILL_BATCH_GATHER_S must be a number of seconds") from None


def folder_of(run: Run) -> Path:
    return run.path / "batch"


class BatchTeacher(Backend):
    """The teacher's backend, with the completions of plan points sent as batches."""

    def __init__(
        self, live: OpenAIBackend, run: Run, note: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(live.ref, batch_price(live.price))
        self.live = live
        self.rounds = Rounds(run, live.base_url, note or _note)

    def identity(self) -> str:
        return self.live.identity()  # the same calls.sqlite keys as the live path

    async def attempt(self, messages: list[dict[str, Any]], call: Call) -> Reply:
        if current_point.get() is None:  # not a plan point (the axes proposal): sent live
            return await self.live.attempt(messages, call)
        return await super().attempt(messages, call)

    async def complete(self, messages: list[dict[str, Any]], call: Call) -> tuple[str, Usage]:
        point = current_point.get()
        body = self.live.request_body(messages, call)
        blob = json.dumps(body, sort_keys=True, ensure_ascii=False)
        custom_id = f"plan-{point}-{sha256_text(blob)[:16]}"
        data = await self.rounds.ask(custom_id, body)
        return self.live.text_of(data, call.response_model is not None), usage_of(data)

    async def aclose(self) -> None:
        await self.rounds.aclose()
        await self.live.aclose()

    def manifest_entry(self) -> dict[str, Any]:
        """What generate's manifest entry says about the batches."""
        return {
            "batch": {
                "price": "batch (OpenAI Batch API, half the list price)",
                "rounds": [
                    {
                        k: e.get(k)
                        for k in ("round", "batch_id", "status", "requests", "request_counts")
                    }
                    for e in self.rounds.entries
                    if e.get("batch_id")
                ],
            }
        }


class Rounds:
    """The run's batches (batch/batches.json) and the requests waiting on them."""

    def __init__(self, run: Run, base_url: str, note: Callable[[str], None]) -> None:
        self.run = run
        self.folder = folder_of(run)
        self.note = note
        self.state = JobFile(self.folder / "batches.json")
        self.uploads = Uploads(self.folder / "uploads.json")
        key = os.environ.get("OPENAI_API_KEY", "").strip()
        if not key and "api.openai.com" in base_url:
            raise BackendError(
                "OPENAI_API_KEY is not set; export OPENAI_API_KEY=sk-... for --batch"
            )
        self.out = Out(key or "unused")
        self.api = BatchApi(key or "unused", base_url, self.out)
        self.gather_s = gather_s()
        self.where: dict[str, int] = {}  # custom_id -> the round that last held it
        self.results: dict[str, tuple[dict[str, Any] | None, str, bool]] = {}
        self.failures: Counter[str] = Counter()  # custom_id -> rounds that did not run it
        self.waiting: dict[str, list[asyncio.Future[None]]] = {}
        self.queue: dict[str, dict[str, Any]] = {}
        self.last_ask = 0.0
        self.error: BaseException | None = None
        self._wake: asyncio.Event | None = None
        self._driver: asyncio.Task[None] | None = None
        self._lock: contextlib.ExitStack | None = None
        for entry in self.entries:
            if entry.get("pending_create") and not entry.get("batch_id"):
                self._find_created(entry)  # killed between creating a batch and its answer
            self._load(entry)

    @property
    def entries(self) -> list[dict[str, Any]]:
        rounds: list[dict[str, Any]] = self.state.data.setdefault("rounds", [])
        return rounds

    def _save(self) -> None:
        self.state.save(rounds=self.entries)

    # -- what a rerun finds ---------------------------------------------------------------
    def _find_created(self, entry: dict[str, Any]) -> None:
        b = self.api.find_batch(entry["file_id"], entry["sha256"])
        known = {e.get("batch_id") for e in self.entries}
        if b is None or b.id in known or b.created_at < entry["pending_create"] - 120:
            return
        entry.update(batch_dict(b))
        entry.pop("pending_create", None)
        self._save()
        self.note(f"found batch {b.id}, created before the last run stopped; following it")

    def _load(self, entry: dict[str, Any]) -> None:
        if entry.get("superseded") or not entry.get("batch_id"):
            return  # never submitted: a candidate for the next round with the same content
        for line in read_jsonl(self.folder / entry["input"]):
            self.where[line["custom_id"]] = entry["round"]
            self.results.pop(line["custom_id"], None)  # a later round ran it again
        if entry.get("collected"):
            self._read_answers(entry)

    def _read_answers(self, entry: dict[str, Any]) -> None:
        """The answers of a collected round; a request it has none for failed (to run again
        in a new round unless the batch had already failed it twice before)."""
        answered: set[str] = set()
        for name in ("output", "error_file"):
            if entry.get(name):
                for line in read_jsonl(self.folder / entry[name]):
                    cid = str(line.get("custom_id"))
                    if self.where.get(cid) == entry["round"]:
                        answered.add(cid)
                        self._result(cid, line)
        for line in read_jsonl(self.folder / entry["input"]):
            cid = line["custom_id"]
            if cid not in answered and self.where.get(cid) == entry["round"]:
                self._fail(cid, f"batch {entry['batch_id']} {entry['status']} without it", True)

    def _result(self, cid: str, line: dict[str, Any]) -> None:
        response = line.get("response") or {}
        status = response.get("status_code")
        body = response.get("body")
        if status == 200 and isinstance(body, dict):
            self.results[cid] = (body, "", False)
            return
        err = line.get("error") or ((body or {}).get("error") if isinstance(body, dict) else {})
        err = err or {}
        code = err.get("code") or (f"HTTP {status}" if status else "error")
        transient = code in TRANSIENT_CODES or (
            isinstance(status, int) and (status == 429 or status >= 500)
        )
        message = " ".join(str(err.get("message") or "no message").split())
        self._fail(cid, f"batch request failed: {message} ({code})", transient)

    def _fail(self, cid: str, why: str, transient: bool) -> None:
        self.results[cid] = (None, why, transient)
        self.failures[cid] += 1

    # -- asking ---------------------------------------------------------------------------
    async def ask(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        """The chat completion for `body`: from a batch that already answered it, else once
        the batch that holds it (or the next round) does. InvalidOutput when the batch
        could not run it."""
        while True:
            if self.error is not None:
                raise self.error
            got = self.results.get(cid)
            if got is not None:
                data, why, transient = got
                if data is not None:
                    return data
                if not transient or self.failures[cid] > RETRIES:
                    raise InvalidOutput(why)
                del self.results[cid]  # run it again in the next round
                self.where.pop(cid, None)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiting.setdefault(cid, []).append(fut)
            if cid not in self.where:
                self.queue[cid] = body
                self.last_ask = time.monotonic()
            self._start()
            await fut

    def _start(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._lock is None:  # two processes following one run would submit rounds twice
            lock = contextlib.ExitStack()
            lock.enter_context(
                exclusive(self.folder, "`distill generate --batch` is following this run")
            )
            self._lock = lock
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive())

    async def aclose(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            await asyncio.gather(self._driver, return_exceptions=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- the rounds -----------------------------------------------------------------------
    async def _drive(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # every waiter hears it; the run fails with this line
            self.error = e
            for futs in self.waiting.values():
                for fut in futs:
                    if not fut.done():
                        fut.set_result(None)
            self.waiting.clear()

    async def _loop(self) -> None:
        base, cap = poll_settings()
        delay = base
        failures = 0
        assert self._wake is not None
        while self.waiting:
            if self.queue and time.monotonic() - self.last_ask >= self.gather_s:
                todo, self.queue = self.queue, {}
                await asyncio.to_thread(self._submit, todo)
                delay = base
            changed = False
            for entry in self._live():
                try:
                    b = await asyncio.to_thread(self.api.batch, entry["batch_id"], True)
                    failures = 0
                except TransientError as e:
                    failures += 1
                    if failures >= POLL_FAILURES:
                        raise BackendError(
                            f"lost contact with the server while following batch "
                            f"{entry['batch_id']} ({e}); it keeps running: re-attach with "
                            "the same command"
                        ) from None
                    continue
                changed |= self._update(entry, b)
                if b.status in TERMINAL:
                    await asyncio.to_thread(self._collect, entry)
                    self._wake_round(entry)
            if self.queue:
                wait = max(0.0, self.last_ask + self.gather_s - time.monotonic())
            elif self._live():
                delay = base if changed else min(cap, delay * 1.5)
                wait = delay
            else:
                wait = self.gather_s
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait + 0.001)

    def _live(self) -> list[dict[str, Any]]:
        """Rounds this session waits on that have not been collected."""
        held = {self.where.get(cid) for cid in self.waiting}
        return [
            e
            for e in self.entries
            if e.get("batch_id") and not e.get("collected") and e["round"] in held
        ]

    def _wake_round(self, entry: dict[str, Any]) -> None:
        for cid in [c for c in self.waiting if self.where.get(c) == entry["round"]]:
            for fut in self.waiting.pop(cid):
                if not fut.done():
                    fut.set_result(None)

    def _update(self, entry: dict[str, Any], b: Any) -> bool:
        seen = batch_dict(b)
        if all(entry.get(k) == v for k, v in seen.items()):
            return False
        entry.update(seen)
        self._save()
        counts = seen["request_counts"] or {}
        self.note(
            f"batch {b.id} (round {entry['round']}, {entry['requests']} requests): {b.status}, "
            f"{counts.get('completed', 0)} done, {counts.get('failed', 0)} failed"
        )
        return True

    def _submit(self, todo: dict[str, dict[str, Any]]) -> None:
        """Write, upload and start the batches for `todo`, recording each step first."""
        lines = [
            json.dumps(
                {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": b},
                ensure_ascii=False,
                sort_keys=True,
            )
            + "\n"
            for cid, b in sorted(todo.items())
        ]
        chunk: list[str] = []
        size = 0
        for line in lines:
            if chunk and (len(chunk) >= MAX_REQUESTS or size + len(line) > MAX_BYTES):
                self._start_round(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line.encode("utf-8"))
        if chunk:
            self._start_round(chunk)

    def _start_round(self, lines: list[str]) -> None:
        text = "".join(lines)
        data = text.encode("utf-8")
        sha = hashlib.sha256(data).hexdigest()
        entry = next(
            (
                e
                for e in self.entries
                if e.get("sha256") == sha and not e.get("batch_id") and not e.get("superseded")
            ),
            None,
        )
        for e in self.entries:  # an unsent round of other content will never be sent
            if e is not entry and not e.get("batch_id") and not e.get("superseded"):
                e["superseded"] = True
        if entry is None:
            n = max([e["round"] for e in self.entries] or [0]) + 1
            entry = {"round": n, "input": f"round-{n:03d}.jsonl", "sha256": sha}
            entry.update(requests=len(lines), bytes=len(data))
            with atomic_file(self.folder / entry["input"], "wb") as f:
                f.write(data)
            self.entries.append(entry)
        self._save()  # the intended file and its sha256, before anything is sent
        name = f"{self.run.name}-{sha[:16]}.jsonl"
        server = self.api.server
        if not entry.get("file_id"):
            fid = self.uploads.find(server, sha)
            if fid is None and entry.get("uploading"):
                fid = self.api.find_file(name, len(data))  # a killed run's upload
            if fid is None:
                entry["uploading"] = True
                self._save()
                fid = str(self.api.upload(self.folder / entry["input"], name).id)
                self.uploads.remember(server, sha, fid, entry["input"], len(data))
            entry["file_id"] = fid
            entry.pop("uploading", None)
            self._save()
        entry["pending_create"] = int(time.time())
        self._save()
        meta = {"distill_run": self.run.name[:512], "distill_input": sha}
        try:
            b = self.api.create(entry["file_id"], meta)
        except ApiError as e:
            if (
                e.status_code is not None
                and e.status_code < 500
                and e.status_code
                not in (
                    408,
                    409,
                    429,
                )
            ):
                entry.pop("pending_create", None)  # refused: no batch was made
                self._save()
                raise
            raise ApiError(
                f"{e}; rerun the same command: it first checks whether the batch was made",
                e.status_code,
            ) from None
        entry.update(batch_dict(b))
        entry.pop("pending_create", None)
        self._save()
        for line in lines:
            self.where[json.loads(line)["custom_id"]] = entry["round"]
        self.note(
            f"batch {b.id}: {len(lines)} requests submitted (round {entry['round']}, "
            f"{self.folder / entry['input']})"
        )

    def _collect(self, entry: dict[str, Any]) -> None:
        """Download an ended batch's output and error files and read its answers; a failed
        or cancelled batch then stops the run (in one line; its requests go in a new batch
        on a rerun)."""
        n = entry["round"]
        for fid_key, name, suffix in (
            ("output_file_id", "output", "output"),
            ("error_file_id", "error_file", "errors"),
        ):
            if entry.get(fid_key) and not entry.get(name):
                local = f"round-{n:03d}.{suffix}.jsonl"
                data = self.api.content(entry[fid_key])
                with atomic_file(self.folder / local, "wb") as f:
                    f.write(data)
                entry[name] = local
                self._save()
        entry["collected"] = True
        self._save()
        self._read_answers(entry)
        if entry["status"] == "failed":
            first = (entry.get("errors") or [{}])[0]
            where = f" (line {first['line']} of the input)" if first.get("line") else ""
            raise BackendError(
                self.out.scrub(
                    f"batch {entry['batch_id']} failed: {first.get('message') or 'no message'}"
                    f"{where}; {self.folder / entry['input']} holds what was sent; fix the "
                    "cause and rerun the same command"
                )
            )
        if entry["status"] == "cancelled":
            kept = sum(
                1 for c, r in self.results.items() if r[0] is not None and self.where.get(c) == n
            )
            raise BackendError(
                f"batch {entry['batch_id']} was cancelled; its {kept} answers are kept. Rerun "
                "the same command to send the rest in a new batch"
            )


def _note(text: str) -> None:
    click.echo(text, err=True)


def batched(backend: Backend, run: Run) -> BatchTeacher:
    """The teacher for --batch; only an openai: teacher has a Batch API."""
    if not isinstance(backend, OpenAIBackend):
        raise UsageError(
            f"--batch uses OpenAI's Batch API and {backend.ref} is not an openai: teacher; "
            "drop --batch or pass --teacher openai:MODEL"
        )
    return BatchTeacher(backend, run)


def has_batches(run: Run) -> bool:
    state = JobFile(folder_of(run) / "batches.json")
    return any(e.get("batch_id") for e in state.get("rounds", []))


def cancel(run: Run, base_url: str | None) -> list[str]:
    """Cancel the run's batches that are still going; lines saying what happened."""
    state = JobFile(folder_of(run) / "batches.json")
    entries = [e for e in state.get("rounds", []) if e.get("batch_id")]
    if not entries:
        raise UsageError(f"{run.path}: no batch to cancel (nothing was submitted with --batch)")
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    url = base_url or os.environ.get("OPENAI_BASE_URL")
    if not key and not url:
        raise BackendError("OPENAI_API_KEY is not set; export OPENAI_API_KEY=sk-...")
    api = BatchApi(key or "unused", url, Out(key or "unused"))
    lines = []
    for e in entries:
        if e.get("status") in TERMINAL:
            lines.append(f"batch {e['batch_id']} already ended: {e['status']}")
            continue
        b = api.cancel(e["batch_id"])
        e.update(batch_dict(b))
        state.save(rounds=state.get("rounds"))
        lines.append(f"cancelled batch {b.id} ({b.status}); answers it already has are kept")
    return lines


def detach_note(run: Run, argv: list[str]) -> str:
    """What Ctrl-C while following prints: the batches keep running."""
    state = JobFile(folder_of(run) / "batches.json")
    going = [
        e["batch_id"]
        for e in state.get("rounds", [])
        if e.get("batch_id") and e.get("status") not in TERMINAL
    ]
    which = f"batch {', '.join(going)} keeps" if going else "the batches keep"
    command = "distill " + " ".join(shlex.quote(a) for a in argv if a != "--attach")
    return (
        f"Detached: {which} running on the server (nothing was cancelled). Re-attach with "
        f"`{command} --attach`, or stop it with `{command} --cancel`"
    )
