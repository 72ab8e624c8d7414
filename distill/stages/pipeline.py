"""`distill run`: every stage in order, each skipped when its inputs have not changed.

A stage's fingerprint is the hash of its options and of the files it reads; it is recorded in
the manifest after the stage succeeds. On a rerun, a stage whose fingerprint matches and whose
outputs exist is skipped, so changing one thing redoes only what depends on it.

`train_student` is the train stage both `distill train` and `distill run` use: it applies the
current review decisions to train.jsonl / eval.jsonl first, so nothing a person rejected is
trained on whatever order the commands ran in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import RunError, UsageError
from distill.models import parse_model
from distill.runs import Run, sha256_file

HOSTED_STUDENT = "gpt-4o-mini"
LOCAL_STUDENT = "local:smollm2-135m"


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]  # run-folder files whose content the stage depends on
    writes: tuple[str, ...]  # run-folder files that must exist for the stage to count as done


STAGES = (
    Stage("generate", (), ("generated.jsonl",)),
    Stage("dedupe", ("generated.jsonl",), ("deduped.jsonl",)),
    Stage(
        "split", ("deduped.jsonl", "review.jsonl", "improve.jsonl"), ("train.jsonl", "eval.jsonl")
    ),
    Stage("train", ("train.jsonl", "eval.jsonl", "review.jsonl"), ()),
    Stage("eval", ("eval.jsonl", "train.jsonl"), ()),
)


# flags that change how a stage runs, not what it makes: changing one does not redo the stage
NOT_FINGERPRINTED = frozenset(
    {
        "concurrency",
        "rpm",
        "tpm",
        "timeout",
        "yes",
        "wait",
        "workers",
        "device",
        "lsh_storage",
        "index_wait",
    }
)


def fingerprint(
    run: Run | None, stage: Stage, options: dict[str, Any], extra_files: list[Path]
) -> str:
    h = hashlib.sha256()
    h.update(stage.name.encode())
    what = {k: v for k, v in options.items() if k not in NOT_FINGERPRINTED}
    h.update(json.dumps(what, sort_keys=True, default=str).encode())
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


def pick_student(teacher: str | None, base_url: str | None = None) -> tuple[str, str]:
    """(student, why) when none is given: a hosted fine-tune after a teacher hosted on OpenAI,
    the embedded local model after any other (local, Ollama, your own server)."""
    if not teacher:
        return LOCAL_STUDENT, "the run records no teacher"
    ref = parse_model(teacher)
    if ref.provider == "openai" and (not base_url or "api.openai.com" in base_url):
        return HOSTED_STUDENT, f"the teacher {teacher} is hosted by OpenAI"
    if ref.provider == "openai":
        return LOCAL_STUDENT, f"the teacher {teacher} is served by {base_url}, not OpenAI"
    if ref.provider in ("anthropic", "google"):
        return LOCAL_STUDENT, f"the teacher {teacher} cannot be fine-tuned here, only OpenAI's"
    return LOCAL_STUDENT, f"the teacher {teacher} runs locally"


def run_teacher(run: Run) -> tuple[str | None, str | None]:
    """(teacher, base_url) that generated the run, from its manifest."""
    config = run.manifest.get("config", {})
    gen = config.get("generate") if isinstance(config.get("generate"), dict) else {}
    return config.get("teacher") or gen.get("teacher"), gen.get("base_url")


def train_student(
    run: Run,
    student: str | None,
    *,
    require_review: bool = False,
    say: Callable[[str], None] = print,
    method: str = "supervised",
    **opts: Any,
) -> dict[str, Any]:
    """Apply the review decisions to the split (refusing unreviewed examples with
    `require_review`), then fine-tune: hosted for OpenAI models, LoRA for local:NAME|PATH.
    `method="dpo"` tunes on pairs.jsonl instead (distill.stages.train_dpo)."""
    if method == "dpo":
        from distill.stages.train_dpo import train_dpo

        return train_dpo(run, student, say=say, **opts)
    if student is None:
        raise UsageError("no student to train; pass --student MODEL")
    ref = parse_model(student)
    if ref.provider not in ("local", "openai"):
        raise UsageError(
            f"cannot fine-tune {student!r}: use a hosted model (gpt-4o-mini) or local:NAME|PATH"
        )
    if not (opts.get("attach") or opts.get("cancel")):  # these act on a job, not on data
        from distill.stages.review_gate import apply_review_gate

        gate = apply_review_gate(run, require_review=require_review)
        if gate is not None and (gate.changed or gate.returned):
            say(gate.summary())
    if ref.provider == "local":
        from distill.stages.train_local import train_local

        return train_local(run, ref.name, **opts)
    from distill.stages.train_hosted import train_hosted

    return train_hosted(run, ref.name, **opts)
