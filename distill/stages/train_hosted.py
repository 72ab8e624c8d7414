"""Hosted fine-tuning on OpenAI or any OpenAI-compatible API: validate, confirm, upload,
create the job, follow it, record the model.

It spends real money and takes minutes to hours, so every step is remembered before the
next one starts: `train/uploads.json` maps each file's sha256 to the server's file id (a rerun
never uploads the same content twice) and `train/<model>/job.json` holds the job (file ids,
job id, status, last event id, fine-tuned model), written atomically after every step. A
process killed at any moment resumes with a rerun of the same command; Ctrl-C while
following detaches and leaves the job running. The API key is read from OPENAI_API_KEY and
never written anywhere.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from distill.errors import BackendError, DistillError, InputError, RunError, UsageError
from distill.models import fine_tune_facts, resolve_fine_tune_model
from distill.runs import (
    Run,
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    sha256_file,
)

T = TypeVar("T")

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_POLL_S = 2.0  # first poll interval; DISTILL_POLL_INTERVAL overrides
MAX_POLL_S = 30.0  # backoff cap; DISTILL_POLL_MAX overrides
POLL_FAILURES = 8  # consecutive transient poll errors before giving up (the job keeps running)
EVENT_PAGE = 100
EVENT_PAGES = 20  # at most this many pages of history per poll
SUFFIX_MAX = 64  # OpenAI's limit on the model-name suffix
CLIENT_RETRIES = 3  # the SDK retries 408/409/429/5xx and connection errors with backoff


class Detached(DistillError):
    """Ctrl-C while following a job: the job keeps running on the server."""

    exit_code = 130


@dataclass(frozen=True)
class HostedOptions:
    """The hosted flags of `distill train`; None means the server's "auto" / default."""

    epochs: int | None = None
    batch_size: int | None = None
    lr_multiplier: float | None = None
    suffix: str | None = None
    seed: int | None = None
    base_url: str | None = None
    yes: bool = False
    wait: bool = True
    attach: bool = False
    cancel: bool = False

    @classmethod
    def from_opts(cls, opts: dict[str, Any]) -> HostedOptions:
        """Take the hosted flags from the click kwargs; the local-only ones are ignored."""
        known = {f for f in cls.__dataclass_fields__}
        picked = {k: v for k, v in opts.items() if k in known and v is not None}
        o = cls(**picked)
        o.check()
        return o

    def check(self) -> None:
        if self.epochs is not None and not 1 <= self.epochs <= 50:
            raise UsageError(f"--epochs {self.epochs}: OpenAI accepts 1 to 50 (or leave it out)")
        if self.batch_size is not None and not 1 <= self.batch_size <= 256:
            raise UsageError(
                f"--batch-size {self.batch_size}: OpenAI accepts 1 to 256 (or leave it out)"
            )
        if self.lr_multiplier is not None and not self.lr_multiplier > 0:
            raise UsageError(f"--lr-multiplier {self.lr_multiplier}: must be greater than 0")
        if self.seed is not None and not 0 <= self.seed <= 2_147_483_647:
            raise UsageError(f"--seed {self.seed}: must be between 0 and 2147483647")
        if self.attach and self.cancel:
            raise UsageError("--attach and --cancel together: pick one")

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "n_epochs": self.epochs if self.epochs is not None else "auto",
            "batch_size": self.batch_size if self.batch_size is not None else "auto",
            "learning_rate_multiplier": (
                self.lr_multiplier if self.lr_multiplier is not None else "auto"
            ),
        }


# -- the data check (the `validate` rules) --------------------------------------------------


@dataclass
class DataCheck:
    """What the validate rules say about one file, in the terms the cost prompt needs."""

    path: Path
    examples: int
    tokens_per_epoch: int
    epochs: int
    billed_tokens: int
    cost_usd: float | None
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    warnings: list[str] = field(default_factory=list)
    warning_count: int = 0


def check_data(
    path: Path, model: str, *, epochs: int | None = None, held_out: bool = False
) -> DataCheck:
    """Run `distill validate`'s rules on a file (the one place that depends on validate.py).

    `held_out` (the eval file): too few examples is only a warning, and nothing is billed."""
    from distill.stages.validate import validate_file

    report = validate_file(path, model=model)
    s = report.stats
    per_epoch = int(s.get("billed_tokens_per_epoch") or 0)
    n_epochs = epochs if epochs is not None else int(s.get("epochs") or 0)
    billed = 0 if held_out else per_epoch * n_epochs
    price = s.get("train_usd_per_1m")
    errors = [p.format(str(path)) for p in report.errors]
    warnings = [p.format(str(path)) for p in report.warnings]
    error_count, warning_count = report.error_count, report.warning_count
    if held_out:
        soft = [e for e in errors if ": too-few-examples: " in e]
        errors = [e for e in errors if e not in soft]
        warnings = soft + warnings
        error_count -= len(soft)
        warning_count += len(soft)
    return DataCheck(
        path=path,
        examples=int(s.get("examples") or 0),
        tokens_per_epoch=per_epoch,
        epochs=n_epochs,
        billed_tokens=billed,
        cost_usd=(billed * float(price) / 1_000_000) if price is not None else None,
        errors=errors,
        error_count=error_count,
        warnings=warnings,
        warning_count=warning_count,
    )


# -- state on disk --------------------------------------------------------------------------


class JobFile:
    """train/<model>/job.json: everything needed to resume, written atomically on each save."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        if path.exists():
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise RunError(
                    f"{path}: unreadable ({e}); it remembers the hosted job, restore it or "
                    "delete it to start a new job"
                ) from None

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def save(self, **changes: Any) -> None:
        self.data.update(changes)
        self.data["updated"] = _now()
        atomic_write_json(self.path, self.data)

    def record_job(self, job: Any) -> None:
        """Remember what the server says about the job (never anything about the key)."""
        err = getattr(job, "error", None)
        self.save(
            job_id=job.id,
            status=job.status,
            fine_tuned_model=job.fine_tuned_model,
            trained_tokens=job.trained_tokens,
            result_files=list(job.result_files or []),
            error=_error_dict(err),
            estimated_finish=getattr(job, "estimated_finish", None),
        )


class Uploads:
    """train/uploads.json: sha256 of a file's bytes -> file id, per server, for every student."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        if path.exists():
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                self.data = {}  # only a cache: the worst case is one more upload

    @staticmethod
    def _key(server: str, sha: str) -> str:
        return f"{server} {sha}"

    def find(self, server: str, sha: str) -> str | None:
        entry = self.data.get(self._key(server, sha))
        return entry["id"] if entry else None

    def remember(self, server: str, sha: str, file_id: str, name: str, size: int) -> None:
        self.data[self._key(server, sha)] = {
            "id": file_id,
            "file": name,
            "bytes": size,
            "at": _now(),
        }
        atomic_write_json(self.path, self.data)


# -- the command ----------------------------------------------------------------------------


def train_hosted(run: Run, name: str, **opts: Any) -> dict[str, Any]:
    """Fine-tune `name` (e.g. gpt-4o-mini) on the run's train.jsonl; see the module docstring."""
    o = HostedOptions.from_opts(opts)
    model = resolve_fine_tune_model(name)
    folder = run.path / "train" / _safe_name(model)
    state = JobFile(folder / "job.json")
    key = _api_key()
    out = Out(key)
    if o.attach or o.cancel:
        base_url = o.base_url or state.get("base_url") or os.environ.get("OPENAI_BASE_URL")
    else:
        base_url = o.base_url or os.environ.get("OPENAI_BASE_URL")
    api = Api(key, base_url, out)
    student = Student(run, name, model, folder, state, api, out)

    if o.cancel:
        return student.cancel()
    if o.attach:
        if not state.get("job_id"):
            raise UsageError(
                f"{state.path}: no hosted job to attach to; start one with "
                f"`distill train --student {name}`"
            )
        return student.follow() if o.wait else student.show()
    return student.start(o)


class Student:
    """One hosted student of one run: its folder, job file and the API it trains on."""

    def __init__(
        self,
        run: Run,
        name: str,
        model: str,
        folder: Path,
        state: JobFile,
        api: Api,
        out: Out,
    ) -> None:
        self.run, self.name, self.model, self.folder = run, name, model, folder
        self.state, self.api, self.out = state, api, out

    # -- start --------------------------------------------------------------------------------
    def start(self, o: HostedOptions) -> dict[str, Any]:
        train_path = self.run.require("train.jsonl", "run `distill split` first")
        eval_path = self.run.file("eval.jsonl")
        has_eval = eval_path.exists() and eval_path.stat().st_size > 0
        suffix = _suffix(o.suffix if o.suffix is not None else self.run.name)
        hp = o.hyperparameters()
        train_sha = sha256_file(train_path)
        eval_sha = sha256_file(eval_path) if has_eval else None
        request = {
            "model": self.model,
            "server": self.api.server,
            "train_sha256": train_sha,
            "eval_sha256": eval_sha,
            "hyperparameters": hp,
            "suffix": suffix,
            "seed": o.seed,
        }
        request_key = hashlib.sha256(
            json.dumps(request, sort_keys=True).encode("utf-8")
        ).hexdigest()[:32]

        st = self.state
        if st.get("job_id") and st.get("request_key") == request_key:
            status = st.get("status")
            if status not in TERMINAL:
                self.out.line(
                    f"A job for this data and these settings exists: {st.get('job_id')} "
                    f"({status}); attaching instead of starting another."
                )
                return self.follow() if o.wait else self.show()
            if status == "succeeded":
                self.out.line(
                    f"Already trained on this data and these settings: job {st.get('job_id')}."
                )
                return self.show()
            self.out.line(
                f"The last job for this data ({st.get('job_id')}) ended {status}; starting a new one."
            )
        elif st.get("job_id") and st.get("status") not in TERMINAL:
            raise UsageError(
                f"job {st.get('job_id')} ({st.get('status')}) from different data or settings "
                f"is still going; follow it with `{self.command('--attach')}` or stop it with "
                f"`{self.command('--cancel')}`, then rerun"
            )

        pending = st.get("pending_create") or {}
        if pending.get("request_key") == request_key:
            job = self.api.find_created(request_key, pending)
            if job is not None:
                self.out.line(
                    f"Found job {job.id}, created before the last run stopped; attaching."
                )
                self._adopt(job, request_key)
                return self.follow() if o.wait else self.show()

        train_check = check_data(train_path, self.model, epochs=o.epochs)
        eval_check = check_data(eval_path, self.model, held_out=True) if has_eval else None
        for check in (train_check, eval_check):
            if check is not None and check.error_count:
                raise InputError(
                    f"{check.path}: {check.error_count} problem(s) the fine-tuning API would "
                    f"reject, first: {check.errors[0]}; `distill validate {check.path}` lists "
                    "them all"
                )
        self._print_plan(train_path, train_check, eval_check, o, suffix)
        if not o.yes:
            if not _stdin_is_terminal():
                raise UsageError(
                    "starting a fine-tune spends money and needs a yes, but there is no terminal "
                    "to ask: pass --yes"
                )
            if not click.confirm("Upload the data and start the fine-tune?", default=False):
                self.out.line("Not started; nothing was uploaded.")
                return {"status": "not started", "folder": str(self.folder)}

        with _exclusive(self.folder):
            train_id = self._upload(train_path, train_sha, "train.jsonl")
            eval_id = self._upload(eval_path, eval_sha, "eval.jsonl") if eval_sha else None
            previous = [
                *st.get("previous_jobs", []),
                *(
                    [{k: st.get(k) for k in ("job_id", "status", "request_key")}]
                    if st.get("job_id")
                    else []
                ),
            ]
            pending = {
                "request_key": request_key,
                "since": int(time.time()),
                "training_file": train_id,
                "validation_file": eval_id,
            }
            st.save(
                student=self.name,
                model=self.model,
                base_url=self.api.base_url,
                training_file=train_id,
                validation_file=eval_id,
                train_sha256=train_sha,
                eval_sha256=eval_sha,
                hyperparameters=hp,
                suffix=suffix,
                seed=o.seed,
                request_key=request_key,
                pending_create=pending,
                previous_jobs=previous,
                job_id=None,
                status=None,
                last_event_id=None,
                fine_tuned_model=None,
                trained_tokens=None,
                result_files=[],
                error=None,
            )
            params: dict[str, Any] = {
                "model": self.model,
                "training_file": train_id,
                "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
                "metadata": {"distill_run": self.run.name[:512], "distill_request": request_key},
            }
            if eval_id:
                params["validation_file"] = eval_id
            if suffix:
                params["suffix"] = suffix
            if o.seed is not None:
                params["seed"] = o.seed
            # no automatic retry: a retried POST after a lost answer could start a second
            # paid job. A rerun looks the job up by its metadata before creating one.
            once = self.api.client.with_options(max_retries=0)
            try:
                job = self.api.call(
                    "creating the fine-tuning job",
                    lambda: once.fine_tuning.jobs.create(**params),
                )
            except ApiError as e:
                if (
                    e.status_code is not None
                    and 400 <= e.status_code < 500
                    and e.status_code not in (408, 409, 429)
                ):
                    st.save(pending_create=None)  # refused: no job was made
                    raise
                raise ApiError(
                    f"{e}; rerun the same command: it first checks whether the job was made",
                    e.status_code,
                ) from None
            self._adopt(job, request_key)
        self.out.line(f"Started job {job.id} ({job.status}).")
        if not o.wait:
            self.out.line(
                f"Not following it (--no-wait). Follow it with `{self.command('--attach')}`, "
                "check it with `distill status`."
            )
            return self.result()
        return self.follow()

    def _adopt(self, job: Any, request_key: str) -> None:
        self.state.record_job(job)
        self.state.save(pending_create=None, request_key=request_key)
        self.run.record_stage(
            "train",
            "running",
            backend="openai",
            student=f"openai:{self.model}",
            job_id=job.id,
            job_status=job.status,
        )

    def _upload(self, path: Path, sha: str, label: str) -> str:
        uploads = Uploads(self.folder.parent / "uploads.json")
        known = uploads.find(self.api.server, sha)
        if known:
            self.out.line(f"  {label}: already uploaded as {known}")
            return known
        size = path.stat().st_size
        with open(path, "rb") as f:
            obj = self.api.call(
                f"uploading {path}",
                lambda: self.api.client.files.create(
                    file=(f"{self.run.name}-{label}", f), purpose="fine-tune"
                ),
            )
        uploads.remember(self.api.server, sha, obj.id, label, size)
        self.out.line(f"  {label}: uploaded as {obj.id} ({size:,} bytes)")
        return obj.id

    def _print_plan(
        self,
        train_path: Path,
        train: DataCheck,
        held: DataCheck | None,
        o: HostedOptions,
        suffix: str | None,
    ) -> None:
        out = self.out
        out.line(f"Fine-tune {self.model} on {self.api.server}")
        out.line(
            f"  train.jsonl: {train.examples:,} examples, "
            f"{train.tokens_per_epoch:,} billed tokens per epoch"
        )
        if held is not None:
            out.line(f"  eval.jsonl:  {held.examples:,} examples (validation, not billed)")
        else:
            out.line("  eval.jsonl:  none (no validation loss will be reported)")
        epochs_note = "" if o.epochs is not None else " (auto: OpenAI's default for this size)"
        out.line(
            f"  epochs {train.epochs}{epochs_note}, batch size {o.batch_size or 'auto'}, "
            f"learning-rate multiplier {o.lr_multiplier or 'auto'}"
        )
        if train.cost_usd is not None:
            out.line(
                f"  billed tokens ~{train.billed_tokens:,}, estimated cost ~${train.cost_usd:,.2f}"
            )
        else:
            out.line(
                f"  billed tokens ~{train.billed_tokens:,}, cost unknown (no price for "
                f"{self.model} in the model table)"
            )
        out.line(f"  model suffix {suffix or '-'}, seed {o.seed if o.seed is not None else 'auto'}")
        for check in (train, held):
            if check is not None and check.warning_count:
                out.line(f"  {check.warning_count} warning(s) in {check.path.name}, first:")
                for w in check.warnings[:3]:
                    out.line(f"    {w}")
        first = next(iter(read_jsonl(train_path)), None)
        if first:
            out.line("  first example:")
            for m in first.get("messages", [])[:4]:
                text = " ".join(str(m.get("content") or "").split())
                out.line(f"    {m.get('role')}: {text[:100]}{'...' if len(text) > 100 else ''}")

    # -- follow, show, cancel -----------------------------------------------------------------
    def show(self) -> dict[str, Any]:
        """One look at the job (--no-wait with --attach, or a job already started)."""
        job = self.api.retrieve(self.state.get("job_id"))
        self.state.record_job(job)
        self.out.line(f"Job {job.id}: {job.status}")
        if job.status in TERMINAL:
            return self._finish(job)
        return self.result()

    def follow(self) -> dict[str, Any]:
        """Poll the job until it ends, showing status changes and training events."""
        job_id = self.state.get("job_id")
        base, cap = _poll_settings()
        events_path = self.folder / "events.jsonl"
        seen = {e.get("id") for e in read_jsonl(events_path)} if events_path.exists() else set()
        display = Display(self.out, job_id)
        delay = base
        failures = 0
        last_status = None
        try:
            with display:
                while True:
                    try:
                        job = self.api.retrieve(job_id, quiet=True)
                        events = self.api.new_events(job_id, self.state.get("last_event_id"))
                        failures = 0
                    except TransientError as e:
                        failures += 1
                        if failures >= POLL_FAILURES:
                            raise BackendError(
                                f"lost contact with the server while following job {job_id} "
                                f"({e}); the job keeps running: re-attach with "
                                f"`{self.command('--attach')}`"
                            ) from None
                        display.note(f"(server unreachable, retrying: {e})")
                        time.sleep(delay)
                        delay = min(cap, delay * 2)
                        continue
                    changed = bool(events) or job.status != last_status
                    fresh = [ev for ev in events if ev.id not in seen]
                    if fresh:
                        append_jsonl(events_path, [_event_dict(ev) for ev in fresh])
                        seen.update(ev.id for ev in fresh)
                    for ev in fresh:
                        display.event(ev)
                    if job.status != last_status:
                        display.status(job.status)
                        last_status = job.status
                    self.state.record_job(job)
                    if events:
                        self.state.save(last_event_id=events[-1].id)
                    if self.run.stage("train").get("job_status") != job.status:
                        self.run.record_stage("train", "running", job_status=job.status)
                    if job.status in TERMINAL:
                        break
                    delay = base if changed else min(cap, delay * 1.5)
                    time.sleep(delay)
        except KeyboardInterrupt:
            raise Detached(
                f"detached from job {job_id}; it keeps running (nothing was cancelled). "
                f"Re-attach with `{self.command('--attach')}`, or see `distill status`"
            ) from None
        return self._finish(job)

    def cancel(self) -> dict[str, Any]:
        job_id = self.state.get("job_id")
        if not job_id:
            raise UsageError(f"{self.state.path}: no hosted job to cancel")
        if self.state.get("status") in TERMINAL:
            self.out.line(f"Job {job_id} already ended: {self.state.get('status')}.")
            return self.result()
        job = self.api.call(
            f"cancelling job {job_id}",
            lambda: self.api.client.fine_tuning.jobs.cancel(job_id),
        )
        self.state.record_job(job)
        self.run.record_stage("train", "cancelled", job_id=job_id, job_status=job.status)
        self.out.line(f"Cancelled job {job_id} ({job.status}).")
        return self.result()

    def _finish(self, job: Any) -> dict[str, Any]:
        """Record a job that has ended: the model on success, the job's own error otherwise."""
        if job.status == "succeeded":
            fine_tuned = job.fine_tuned_model
            files = self._download_results(job)
            self.run.update_manifest(
                student={
                    "model": f"openai:{fine_tuned}",
                    "base": f"openai:{self.model}",
                    "base_url": self.api.base_url,
                }
            )
            facts = fine_tune_facts(self.model)
            cost = (
                round(job.trained_tokens * float(facts["train_per_1m"]) / 1_000_000, 4)
                if facts and job.trained_tokens
                else None
            )
            self.run.record_stage(
                "train",
                "succeeded",
                backend="openai",
                student=f"openai:{self.model}",
                job_id=job.id,
                job_status=job.status,
                fine_tuned_model=fine_tuned,
                trained_tokens=job.trained_tokens,
                cost_usd=cost,
                result_files=files,
            )
            tokens = f"{job.trained_tokens:,}" if job.trained_tokens else "?"
            self.out.line(
                f"Succeeded: {fine_tuned} ({tokens} trained tokens"
                + (f", ~${cost:,.2f}" if cost is not None else "")
                + "). Evaluate it with `distill eval`."
            )
            return self.result()
        err = _error_dict(job.error) or {}
        self.run.record_stage(
            "train",
            job.status,
            job_id=job.id,
            job_status=job.status,
            error=err.get("message"),
            error_code=err.get("code"),
        )
        if job.status == "cancelled":
            raise BackendError(
                f"job {job.id} was cancelled; run `{self.command()}` to start a new one"
            )
        where = f", param {err['param']}" if err.get("param") else ""
        raise BackendError(
            self.out.scrub(
                f"job {job.id} failed: {err.get('message') or 'no message'} "
                f"(code {err.get('code') or '-'}{where}); fix the data or settings and run "
                f"`{self.command()}` again"
            )
        )

    def _download_results(self, job: Any) -> list[str]:
        """Save the job's result files (step metrics CSV) next to job.json."""
        names: list[str] = []
        files = self.api.client.files
        for fid in job.result_files or []:
            filename = None
            with contextlib.suppress(DistillError):
                filename = self.api.call(
                    f"looking up result file {fid}", functools.partial(files.retrieve, fid)
                ).filename
            # the SDK asks for application/binary; the API describes this answer as JSON
            # text and strict servers refuse a mismatch, so accept whatever it sends
            response = self.api.call(
                f"downloading result file {fid}",
                functools.partial(files.content, fid, extra_headers={"Accept": "*/*"}),
            )
            data = response.read()
            text = _decode_result(data)
            name = _safe_name(filename or "") or f"{fid}.csv"
            if name in names or name in ("job.json", "events.jsonl"):
                name = f"{_safe_name(fid)}-{name}"
            atomic_write_text(self.folder / name, text)
            names.append(name)
        return names

    def result(self) -> dict[str, Any]:
        st = self.state
        return {
            "job_id": st.get("job_id"),
            "status": st.get("status"),
            "fine_tuned_model": st.get("fine_tuned_model"),
            "trained_tokens": st.get("trained_tokens"),
            "folder": str(self.folder),
        }

    def command(self, *flags: str) -> str:
        q = shlex.quote
        parts = ["distill train", f"--student {q(self.name)}", f"--run {q(str(self.run.path))}"]
        parts += flags
        if self.api.base_url and "--attach" not in flags and "--cancel" not in flags:
            parts.append(f"--base-url {q(self.api.base_url)}")
        return " ".join(parts)


# -- the API --------------------------------------------------------------------------------


class ApiError(BackendError):
    """An API call failed; `status_code` is None when no answer came (network, timeout)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TransientError(Exception):
    """A poll that failed in a way worth retrying (network, 5xx, 429)."""


class Api:
    """The official `openai` client plus one-line errors that name the request id."""

    def __init__(self, key: str, base_url: str | None, out: Out) -> None:
        import openai

        self.base_url = base_url.rstrip("/") if base_url else None
        self.client = openai.OpenAI(
            api_key=key, base_url=self.base_url, max_retries=CLIENT_RETRIES, timeout=120.0
        )
        self.server = self.base_url or "https://api.openai.com/v1"
        self.out = out

    def call(self, what: str, fn: Callable[[], T]) -> T:
        import openai

        try:
            return fn()
        except openai.APIStatusError as e:
            raise ApiError(
                self.out.scrub(f"{what} failed: {_status_text(e)}"), e.status_code
            ) from None
        except openai.APIConnectionError as e:
            raise ApiError(
                self.out.scrub(
                    f"{what} failed: cannot reach {self.server} ({_cause(e)}); check the "
                    "network or --base-url"
                )
            ) from None

    def retrieve(self, job_id: str, quiet: bool = False) -> Any:
        """GET the job; with quiet=True transient failures raise TransientError to retry."""
        import openai

        if not quiet:
            return self.call(
                f"looking up job {job_id}",
                lambda: self.client.fine_tuning.jobs.retrieve(job_id),
            )
        try:
            return self.client.fine_tuning.jobs.retrieve(job_id)
        except openai.APIStatusError as e:
            if e.status_code in (408, 409, 429) or e.status_code >= 500:
                raise TransientError(self.out.scrub(_status_text(e))) from None
            raise BackendError(
                self.out.scrub(f"looking up job {job_id} failed: {_status_text(e)}")
            ) from None
        except openai.APIConnectionError as e:
            raise TransientError(self.out.scrub(_cause(e))) from None

    def new_events(self, job_id: str, last_id: str | None) -> list[Any]:
        """Events newer than `last_id`, oldest first (the API lists newest first)."""
        import openai

        fresh: list[Any] = []
        ids: set[str] = set()
        after: str | None = None
        try:
            for _ in range(EVENT_PAGES):
                kwargs: dict[str, Any] = {"limit": EVENT_PAGE}
                if after:
                    kwargs["after"] = after
                page = self.client.fine_tuning.jobs.list_events(job_id, **kwargs)
                data = list(page.data)
                if len(data) > 1 and (data[0].created_at or 0) < (data[-1].created_at or 0):
                    data.reverse()  # a server that lists oldest first
                stop = False
                for ev in data:
                    if ev.id == last_id:
                        stop = True
                        break
                    if ev.id not in ids:
                        ids.add(ev.id)
                        fresh.append(ev)
                if stop or not data or not getattr(page, "has_more", False):
                    break
                if data[-1].id == after:
                    break  # a server that ignores `after`: no progress to make
                after = data[-1].id
        except openai.APIStatusError as e:
            if e.status_code in (408, 409, 429) or e.status_code >= 500:
                raise TransientError(self.out.scrub(_status_text(e))) from None
            raise BackendError(
                self.out.scrub(f"listing events of job {job_id} failed: {_status_text(e)}")
            ) from None
        except openai.APIConnectionError as e:
            raise TransientError(self.out.scrub(_cause(e))) from None
        fresh.reverse()
        return fresh

    def find_created(self, request_key: str, pending: dict[str, Any]) -> Any | None:
        """The job a killed run may have created before it saw the answer (matched by the
        metadata we sent, or by files and model on servers that drop metadata)."""
        page = self.call(
            "listing fine-tuning jobs",
            lambda: self.client.fine_tuning.jobs.list(
                limit=20, metadata={"distill_request": request_key}
            ),
        )
        since = int(pending.get("since") or 0) - 120
        for job in page.data:
            meta = getattr(job, "metadata", None) or {}
            if meta.get("distill_request") == request_key:
                return job
        for job in page.data:
            if (
                not getattr(job, "metadata", None)
                and job.training_file == pending.get("training_file")
                and job.validation_file == pending.get("validation_file")
                and (job.created_at or 0) >= since
            ):
                return job
        return None


# -- output ---------------------------------------------------------------------------------


class Out:
    """Prints to stdout through rich, with the API key scrubbed from anything shown."""

    def __init__(self, key: str) -> None:
        from rich.console import Console

        self.key = key
        self.console = Console(highlight=False, soft_wrap=True)

    def scrub(self, text: str) -> str:
        """One line (server text may hold newlines), never the key."""
        text = re.sub(r"\s*[\r\n]+\s*", " ", str(text)).rstrip()
        # a throwaway key for a local server ("x") must not blank out every "x" shown
        return text.replace(self.key, "***") if len(self.key) >= 8 else text

    def line(self, text: str) -> None:
        self.console.print(self.scrub(text), markup=False)


class Display:
    """The follow view: status changes and messages as lines, training steps and losses in a
    progress bar (a live bar on a terminal, plain lines otherwise)."""

    def __init__(self, out: Out, job_id: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.out = out
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[losses]}"),
            TimeElapsedColumn(),
            console=out.console,
        )
        self.task = self.progress.add_task(f"job {job_id}", total=None, losses="")
        self.losses: dict[str, float] = {}

    def __enter__(self) -> Display:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _print(self, text: str) -> None:
        self.progress.console.print(self.out.scrub(text), markup=False)

    def note(self, text: str) -> None:
        self._print(text)

    def status(self, status: str) -> None:
        self._print(f"status: {status}")

    def event(self, ev: Any) -> None:
        data = getattr(ev, "data", None) or {}
        if not isinstance(data, dict):
            data = {}
        step = data.get("step")
        if getattr(ev, "type", None) == "metrics" or isinstance(step, int):
            for k in ("train_loss", "valid_loss", "full_valid_loss"):
                if isinstance(data.get(k), int | float):
                    self.losses[k] = float(data[k])
            losses = "  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in self.losses.items())
            total = data.get("total_steps")
            self.progress.update(
                self.task,
                completed=step if isinstance(step, int) else None,
                total=total if isinstance(total, int) else None,
                losses=losses,
            )
            if not self.out.console.is_terminal and _worth_a_line(step, total):
                self._print(f"step {step}/{total or '?'}  {losses}")
            return
        level = getattr(ev, "level", "info")
        mark = "" if level == "info" else f"[{level}] "
        self._print(f"  {mark}{getattr(ev, 'message', '')}")


# -- small pieces ---------------------------------------------------------------------------


def _worth_a_line(step: Any, total: Any) -> bool:
    """Without a live bar, about 20 step lines a job: the first, every 5 %, the last."""
    if not isinstance(step, int) or not isinstance(total, int) or total <= 20:
        return True
    return step in (1, total) or step % (total // 20) == 0


def _api_key() -> str:
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not key:
        raise BackendError(
            "OPENAI_API_KEY is not set; export OPENAI_API_KEY=... (your key for the fine-tuning "
            "API) and rerun"
        )
    return key


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _poll_settings() -> tuple[float, float]:
    """(first interval, cap) in seconds; DISTILL_POLL_INTERVAL / DISTILL_POLL_MAX override."""
    try:
        base = float(os.environ.get("DISTILL_POLL_INTERVAL", DEFAULT_POLL_S))
        cap = float(os.environ.get("DISTILL_POLL_MAX", max(MAX_POLL_S, base)))
    except ValueError:
        raise UsageError(
            "DISTILL_POLL_INTERVAL / DISTILL_POLL_MAX must be numbers of seconds"
        ) from None
    return max(base, 0.0), max(cap, base)


def _suffix(text: str | None) -> str | None:
    """A model-name suffix OpenAI accepts: lower-case letters, digits, - and _, <= 64 chars."""
    if not text:
        return None
    s = re.sub(r"[^a-z0-9_-]+", "-", text.lower())
    s = re.sub(r"-{2,}", "-", s).strip("-_")[:SUFFIX_MAX].rstrip("-_")
    return s or None


def _safe_name(text: str) -> str:
    """A file or folder name from a model id or a server-side filename."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:120]


def _error_dict(err: Any) -> dict[str, Any] | None:
    if err is None:
        return None
    if isinstance(err, dict):
        d = err
    else:
        d = {k: getattr(err, k, None) for k in ("code", "message", "param")}
    if not any(d.get(k) for k in ("code", "message")):
        return None
    return {k: d.get(k) for k in ("code", "message", "param")}


def _event_dict(ev: Any) -> dict[str, Any]:
    return {
        "id": ev.id,
        "created_at": ev.created_at,
        "level": ev.level,
        "type": getattr(ev, "type", None),
        "message": ev.message,
        "data": getattr(ev, "data", None),
    }


def _status_text(e: Any) -> str:
    """The server's own words, its code, the HTTP status and the request id, on one line."""
    body = e.body if isinstance(e.body, dict) else {}
    message = body.get("message") or e.message
    code = body.get("code") or getattr(e, "code", None)
    rid = e.request_id or e.response.headers.get("x-request-id")
    parts = [f"HTTP {e.status_code}"]
    if code:
        parts.append(f"code {code}")
    parts.append(f"request id {rid or 'none'}")
    return f"{message} ({', '.join(parts)})"


def _cause(e: BaseException) -> str:
    inner = e.__cause__ or e.__context__
    return f"{type(inner).__name__}: {inner}" if inner else str(e)


def _decode_result(data: bytes) -> str:
    """Result files come as CSV, or as base64 of the CSV (OpenAI's fine-tuning results)."""
    text = data.decode("utf-8", errors="replace")
    compact = "".join(text.split())
    if compact and "," not in text and re.fullmatch(r"[A-Za-z0-9+/=]+", compact):
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            return base64.b64decode(compact, validate=True).decode("utf-8")
    return text


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """One process at a time uploads and creates a job for a student (no duplicate jobs).
    The lock dies with its process, so a SIGKILL never leaves it stuck."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(folder / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(
                f"{folder}: another `distill train` is uploading or starting this job; "
                "let it finish or stop it, then rerun"
            ) from None
        yield


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
