"""rejected.jsonl across reruns: a stage that runs again first forgets what it rejected last
time, so an example is never listed twice (or listed although it is now kept)."""

from __future__ import annotations

from distill.runs import Run, atomic_write_jsonl, read_jsonl


def drop_stage_rejections(run: Run, stage: str, reason_prefix: str = "") -> None:
    """Forget rows a previous attempt of `stage` wrote to rejected.jsonl (only those whose
    reason starts with `reason_prefix`, when given)."""
    path = run.file("rejected.jsonl")
    if not path.exists():
        return
    rows = list(read_jsonl(path))
    keep = [
        r
        for r in rows
        if not (r.get("stage") == stage and str(r.get("reason", "")).startswith(reason_prefix))
    ]
    if len(keep) != len(rows):
        atomic_write_jsonl(path, keep)
