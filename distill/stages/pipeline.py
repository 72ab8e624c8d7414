"""`distill run`: every stage in order, each skipped when its inputs have not changed.

A stage's fingerprint is the hash of its options and of the files it reads; it is recorded in
the manifest after the stage succeeds. On a rerun, a stage whose fingerprint matches and whose
outputs exist is skipped, so changing one thing redoes only what depends on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import RunError
from distill.runs import Run, sha256_file


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]  # run-folder files whose content the stage depends on
    writes: tuple[str, ...]  # run-folder files that must exist for the stage to count as done


STAGES = (
    Stage("generate", (), ("generated.jsonl",)),
    Stage("dedupe", ("generated.jsonl",), ("deduped.jsonl",)),
    Stage("split", ("deduped.jsonl", "review.jsonl"), ("train.jsonl", "eval.jsonl")),
    Stage("train", ("train.jsonl", "eval.jsonl"), ()),
    Stage("eval", ("eval.jsonl", "train.jsonl"), ()),
)


def fingerprint(
    run: Run | None, stage: Stage, options: dict[str, Any], extra_files: list[Path]
) -> str:
    h = hashlib.sha256()
    h.update(stage.name.encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    files = [run.file(f) for f in stage.reads] if run else []
    for p in [*files, *extra_files]:
        h.update(str(p.name).encode())
        h.update(sha256_file(p).encode() if p.exists() else b"absent")
    if stage.name == "eval" and run is not None:
        # the student is whatever the last training produced
        m = run.manifest
        h.update(json.dumps([m.get("student"), m.get("pipeline", {}).get("train")]).encode())
    return h.hexdigest()


def is_current(run: Run, stage: Stage, fp: str) -> bool:
    m = run.manifest
    if m.get("pipeline", {}).get(stage.name) != fp:
        return False
    if m.get("stages", {}).get(stage.name, {}).get("status") not in ("done", "succeeded"):
        return False
    return all(run.file(f).exists() for f in stage.writes)


def mark_current(run: Run, stage: Stage, fp: str) -> None:
    run.update_manifest(pipeline={stage.name: fp})


def run_pipeline(
    invoke: Callable[[str, dict[str, Any]], None],
    open_run: Callable[[], Run],
    options: dict[str, dict[str, Any]],
    extra_files: dict[str, list[Path]],
    say: Callable[[str], None],
    only_from: str | None = None,
) -> Run:
    """Run each stage through `invoke(name, options)`, skipping the current ones."""
    run: Run | None = None
    for i, stage in enumerate(STAGES, 1):
        opts = options.get(stage.name, {})
        if run is None:  # before generate the run may not exist yet
            try:
                run = open_run()
            except RunError:
                run = None
        fp = fingerprint(run, stage, opts, extra_files.get(stage.name, []))
        if run is not None and is_current(run, stage, fp):
            say(f"[{i}/{len(STAGES)}] {stage.name}: up to date, skipped")
            continue
        say(f"[{i}/{len(STAGES)}] {stage.name} ...")
        invoke(stage.name, opts)
        run = open_run()
        fp = fingerprint(run, stage, opts, extra_files.get(stage.name, []))
        mark_current(run, stage, fp)
    assert run is not None
    return run
