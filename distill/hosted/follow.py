"""Following a job until it ends: poll with backoff, append new events to events.jsonl, keep
job.json current, and show status changes, messages and a progress bar with the losses."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from distill.errors import BackendError, DistillError, UsageError
from distill.hosted.api import Api, TransientError
from distill.hosted.jobs import JobFile
from distill.hosted.out import Out
from distill.runs import Run, append_jsonl, read_jsonl

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_POLL_S = 2.0  # first poll interval; DISTILL_POLL_INTERVAL overrides
MAX_POLL_S = 30.0  # backoff cap; DISTILL_POLL_MAX overrides
POLL_FAILURES = 8  # consecutive transient poll errors before giving up (the job keeps running)


class Detached(DistillError):
    """Ctrl-C while following a job: the job keeps running on the server."""

    exit_code = 130


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


def poll_settings() -> tuple[float, float]:
    """(first interval, cap) in seconds; DISTILL_POLL_INTERVAL / DISTILL_POLL_MAX override."""
    try:
        base = float(os.environ.get("DISTILL_POLL_INTERVAL", DEFAULT_POLL_S))
        cap = float(os.environ.get("DISTILL_POLL_MAX", max(MAX_POLL_S, base)))
    except ValueError:
        raise UsageError(
            "DISTILL_POLL_INTERVAL / DISTILL_POLL_MAX must be numbers of seconds"
        ) from None
    return max(base, 0.0), max(cap, base)


def event_dict(ev: Any) -> dict[str, Any]:
    return {
        "id": ev.id,
        "created_at": ev.created_at,
        "level": ev.level,
        "type": getattr(ev, "type", None),
        "message": ev.message,
        "data": getattr(ev, "data", None),
    }


def follow(
    api: Api,
    state: JobFile,
    run: Run,
    events_path: Path,
    out: Out,
    attach: str,
    stage: str = "train",
) -> Any:
    """Poll the job in `state` until it ends, showing status changes and training events;
    returns the ended job. `attach` is the command that re-attaches, for the messages;
    `stage` the manifest stage that records the job's status."""
    job_id = state.get("job_id")
    base, cap = poll_settings()
    seen = {e.get("id") for e in read_jsonl(events_path)} if events_path.exists() else set()
    display = Display(out, job_id)
    delay = base
    failures = 0
    last_status = None
    try:
        with display:
            while True:
                try:
                    job = api.retrieve(job_id, quiet=True)
                    events = api.new_events(job_id, state.get("last_event_id"))
                    failures = 0
                except TransientError as e:
                    failures += 1
                    if failures >= POLL_FAILURES:
                        raise BackendError(
                            f"lost contact with the server while following job {job_id} "
                            f"({e}); the job keeps running: re-attach with `{attach}`"
                        ) from None
                    display.note(f"(server unreachable, retrying: {e})")
                    time.sleep(delay)
                    delay = min(cap, delay * 2)
                    continue
                changed = bool(events) or job.status != last_status
                fresh = [ev for ev in events if ev.id not in seen]
                if fresh:
                    append_jsonl(events_path, [event_dict(ev) for ev in fresh])
                    seen.update(ev.id for ev in fresh)
                for ev in fresh:
                    display.event(ev)
                if job.status != last_status:
                    display.status(job.status)
                    last_status = job.status
                state.record_job(job)
                if events:
                    state.save(last_event_id=events[-1].id)
                if run.stage(stage).get("job_status") != job.status:
                    run.record_stage(stage, "running", job_status=job.status)
                if job.status in TERMINAL:
                    return job
                delay = base if changed else min(cap, delay * 1.5)
                time.sleep(delay)
    except KeyboardInterrupt:
        raise Detached(
            f"detached from job {job_id}; it keeps running (nothing was cancelled). "
            f"Re-attach with `{attach}`, or see `distill status`"
        ) from None
