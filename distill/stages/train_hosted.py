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
from pathlib import Path
from typing import Any

import click

from distill.errors import BackendError, DistillError, InputError, UsageError
from distill.hosted.api import Api, ApiError, TransientError, api_key
from distill.hosted.follow import TERMINAL, Detached, follow
from distill.hosted.jobs import JobFile, Uploads, error_dict, exclusive, safe_name
from distill.hosted.options import HostedOptions
from distill.hosted.out import Out
from distill.hosted.plan import DataCheck, check_data, check_pairs, print_plan
from distill.models import fine_tune_facts, resolve_fine_tune_model
from distill.runs import Run, atomic_write_text, sha256_file

SUFFIX_MAX = 64  # OpenAI's limit on the model-name suffix


def train_hosted(run: Run, name: str, **opts: Any) -> dict[str, Any]:
    """Fine-tune `name` (e.g. gpt-4o-mini) on the run's train.jsonl; see the module docstring."""
    o = HostedOptions.from_opts(opts)
    model = resolve_fine_tune_model(name)
    # a DPO job lives beside the supervised one, with its own job.json
    folder = run.path / "train" / (safe_name(model) + ("-dpo" if o.method == "dpo" else ""))
    state = JobFile(folder / "job.json")
    key = api_key()
    out = Out(key)
    if o.attach or o.cancel:
        base_url = o.base_url or state.get("base_url") or os.environ.get("OPENAI_BASE_URL")
    else:
        base_url = o.base_url or os.environ.get("OPENAI_BASE_URL")
    api = Api(key, base_url, out)
    student = Student(run, name, model, folder, state, api, out)
    student.method = o.method

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

    method = "supervised"  # or "dpo": recorded as the manifest's stage "dpo" and `preference`

    @property
    def stage(self) -> str:
        return "dpo" if self.method == "dpo" else "train"

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
        dpo = o.method == "dpo"
        if dpo:
            from distill.stages.pairs import PAIRS_FILE, PAIRS_HINT

            train_path = self.run.require(PAIRS_FILE, PAIRS_HINT)
        else:
            train_path = self.run.require("train.jsonl", "run `distill split` first")
        eval_path = self.run.file("eval.jsonl")
        has_eval = not dpo and eval_path.exists() and eval_path.stat().st_size > 0
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
        if dpo:  # supervised keys stay as they were, so their jobs are still found
            request["method"] = o.method_body()
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

        train_check = (
            check_pairs(train_path, self.model, epochs=o.epochs)
            if dpo
            else check_data(train_path, self.model, epochs=o.epochs)
        )
        eval_check = check_data(eval_path, self.model, held_out=True) if has_eval else None
        for check in (train_check, eval_check):
            if check is not None and check.error_count:
                raise InputError(
                    f"{check.path}: {check.error_count} problem(s) the fine-tuning API would "
                    f"reject, first: {check.errors[0]}; `distill validate {check.path}` lists "
                    "them all"
                )
        print_plan(
            self.out, self.model, self.api.server, train_path, train_check, eval_check, o, suffix
        )
        if not o.yes:
            if not _stdin_is_terminal():
                raise UsageError(
                    "starting a fine-tune spends money and needs a yes, but there is no terminal "
                    "to ask: pass --yes"
                )
            if not click.confirm("Upload the data and start the fine-tune?", default=False):
                self.out.line("Not started; nothing was uploaded.")
                return {"status": "not started", "folder": str(self.folder)}

        with exclusive(self.folder):
            train_id = self._upload(train_path, train_sha, train_path.name)
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
                "method": o.method_body(),
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
            self.stage,
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
        events = self.folder / "events.jsonl"
        attach = self.command("--attach")
        return self._finish(
            follow(self.api, self.state, self.run, events, self.out, attach, self.stage)
        )

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
        self.run.record_stage(self.stage, "cancelled", job_id=job_id, job_status=job.status)
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
            if self.method == "dpo":
                self.run.update_manifest(
                    preference={
                        "model": f"openai:{fine_tuned}",
                        "reference": f"openai:{self.model}",
                        "base": f"openai:{self.model}",
                        "method": "dpo",
                    }
                )
            facts = fine_tune_facts(self.model)
            cost = (
                round(job.trained_tokens * float(facts["train_per_1m"]) / 1_000_000, 4)
                if facts and job.trained_tokens
                else None
            )
            self.run.record_stage(
                self.stage,
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
        err = error_dict(job.error) or {}
        self.run.record_stage(
            self.stage,
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
            name = safe_name(filename or "") or f"{fid}.csv"
            if name in names or name in ("job.json", "events.jsonl"):
                name = f"{safe_name(fid)}-{name}"
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
        if self.method == "dpo":
            parts.append("--method dpo")
        parts += flags
        if self.api.base_url and "--attach" not in flags and "--cancel" not in flags:
            parts.append(f"--base-url {q(self.api.base_url)}")
        return " ".join(parts)


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _suffix(text: str | None) -> str | None:
    """A model-name suffix OpenAI accepts: lower-case letters, digits, - and _, <= 64 chars."""
    if not text:
        return None
    s = re.sub(r"[^a-z0-9_-]+", "-", text.lower())
    s = re.sub(r"-{2,}", "-", s).strip("-_")[:SUFFIX_MAX].rstrip("-_")
    return s or None


def _decode_result(data: bytes) -> str:
    """Result files come as CSV, or as base64 of the CSV (OpenAI's fine-tuning results)."""
    text = data.decode("utf-8", errors="replace")
    compact = "".join(text.split())
    if compact and "," not in text and re.fullmatch(r"[A-Za-z0-9+/=]+", compact):
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            return base64.b64decode(compact, validate=True).decode("utf-8")
    return text


__all__ = [
    "Api",
    "ApiError",
    "DataCheck",
    "Detached",
    "HostedOptions",
    "JobFile",
    "Out",
    "Student",
    "TransientError",
    "Uploads",
    "check_data",
    "train_hosted",
]
