"""`distill pairs`: preference pairs for DPO from the run's training prompts.

For each train example after the review gate (a rejected example never becomes a pair, an edit
is used as edited) the prompt is the conversation up to the last assistant reply; *chosen* is
the teacher's reply, *rejected* the student's (or the base's) answer to the same prompt, asked
through calls.sqlite like eval's calls, so a rerun after a kill re-asks nothing finished. A pair
is kept only when the margin is clear: the chosen reply passes the style spec and the rejected
one fails it (eval's style check), or, with a judge, the judge prefers the chosen reply in both
orders. Kept pairs go to pairs.jsonl in OpenAI's preference fine-tuning format; every dropped
candidate goes to rejected.jsonl with its reason."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.backends.base import Backend
from distill.calls import CallLog
from distill.errors import DistillError, InputError, RunError, UsageError
from distill.evaluation.asking import ask_reply, ask_verdict
from distill.evaluation.inputs import (
    Item,
    Verdict,
    held_out_items,
    judge_messages,
    judge_template,
    load_style,
    reply_max_tokens,
)
from distill.models import parse_model
from distill.runs import Run, atomic_write_jsonl, read_jsonl
from distill.style import StyleSpec

STAGE = "pairs"
PAIRS_FILE = "pairs.jsonl"
PAIRS_IDS_FILE = "pairs_ids.jsonl"
PAIRS_HINT = "run `distill pairs` first"
NO_REFERENCE = "(none here: judge the two replies on their own)"

Progress = Callable[[int, int], None]
BackendFactory = Callable[[str], Backend]


@dataclass
class Candidate:
    """One train prompt with its two replies and what decided it."""

    item: Item
    chosen: str
    rejected: str | None = None
    error: str | None = None
    verdicts: tuple[Verdict | str, Verdict | str] | None = None


def dpo_reference(run: Run) -> str | None:
    """The supervised student a DPO round starts from: the run's trained student, unless that
    student is itself the DPO one (then the SFT model it was tuned from)."""
    m = run.manifest
    trained = (m.get("student") or {}).get("model")
    pref = m.get("preference") or {}
    if trained and pref.get("model") == trained:
        return pref.get("reference")
    return trained


def pick_rejected_model(run: Run, student: str | None) -> tuple[str, str]:
    """(model, why): the model whose replies are the rejected side."""
    if student:
        parse_model(student)
        return student, "chosen with --student"
    sft = dpo_reference(run)
    if sft:
        return sft, "the run's trained student"
    base = (run.manifest.get("student") or {}).get("base")
    if base:
        return base, "the student's base (no trained student yet)"
    from distill.stages.pipeline import pick_student, run_teacher

    model, _ = pick_student(*run_teacher(run))
    if parse_model(model).provider != "local":
        raise UsageError(
            f"no trained student and no local base in {run.path}; pass --student MODEL "
            "(the model whose replies should be the rejected side)"
        )
    return model, "the default local base (no trained student yet)"


def build_pairs(
    run: Run,
    *,
    student: str | None = None,
    judge: str | None = None,
    base_url: str | None = None,
    concurrency: int = 8,
    limit: int | None = None,
    backends: dict[str, Backend] | None = None,
    factory: BackendFactory | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write pairs.jsonl (+ pairs_ids.jsonl) for the run; return the counts recorded in the
    manifest's `pairs` stage."""
    if concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, not {concurrency}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, not {limit}")
    from distill.stages.review_gate import apply_review_gate

    run.require("train.jsonl", "run `distill split` first")
    gate = apply_review_gate(run)
    if gate is None:
        raise RunError(f"{run.file('eval.jsonl')}: missing; run `distill split` first")
    if say is not None and (gate.changed or gate.returned):
        say(gate.summary())
    spec = load_style(run)
    if judge is not None and judge.strip().lower() in ("none", "off", ""):
        judge = None
    if judge is None and spec is None:
        raise UsageError(
            f"{run.path}: the run has no style spec, so a clear margin cannot be measured; "
            "pass --judge MODEL to have a judge compare the replies"
        )
    model, why = pick_rejected_model(run, student)
    if say is not None:
        say(f"rejected side: {model} ({why}); chosen side: the teacher's replies in train.jsonl")
    rows = gate.rows["train"]
    records = [{"id": r["id"], "meta": r["meta"], "messages": r["messages"]} for r in rows]
    if limit is not None:
        records = records[:limit]
    items, skipped = held_out_items(records, spec.system_prompt if spec else None)
    cands = [Candidate(it, it.reference) for it in items]

    made = dict(backends or {})
    injected = set(made)

    def backend(name: str) -> Backend:
        if name not in made:
            from distill.stages.evaluate import _default_factory

            made[name] = (factory or _default_factory(base_url))(name)
        return made[name]

    student_b = backend(model)
    judge_b = backend(judge) if judge else None
    calls = CallLog(run.file("calls.sqlite"))
    try:
        asyncio.run(
            _ask(cands, student_b, judge_b, spec, calls, concurrency, progress, made, injected)
        )
        usage = calls.totals(STAGE)
    finally:
        calls.close()

    kept: list[Candidate] = []
    dropped: list[tuple[dict[str, Any], str]] = [(rec, f"no prompt: {w}") for rec, w in skipped]
    for c in cands:
        reason = _why_not(c, spec, judge)
        if reason is None:
            kept.append(c)
        else:
            rec = {"id": c.item.id, "messages": c.item.context, "meta": c.item.meta}
            dropped.append(({**rec, "chosen": c.chosen, "rejected": c.rejected}, reason))

    atomic_write_jsonl(run.file(PAIRS_FILE), (preference_line(c) for c in kept))
    atomic_write_jsonl(
        run.file(PAIRS_IDS_FILE), ({"id": c.item.id, "meta": c.item.meta} for c in kept)
    )
    _reject_new(run, dropped)
    reasons = Counter(why.split(":")[0] for _, why in dropped)
    summary = {
        "kept": len(kept),
        "dropped": len(dropped),
        "candidates": len(records),
        "reasons": dict(reasons.most_common()),
        "rejected_model": model,
        "margin": f"judge {judge} prefers the teacher in both orders" if judge else "style",
        "judge": judge,
        "file": str(run.file(PAIRS_FILE)),
        "usage": usage,
    }
    run.record_stage(STAGE, "done", **summary)
    return summary


def preference_line(c: Candidate) -> dict[str, Any]:
    """One line of OpenAI's preference fine-tuning format."""
    return {
        "input": {"messages": c.item.context, "tools": [], "parallel_tool_calls": True},
        "preferred_output": [{"role": "assistant", "content": c.chosen}],
        "non_preferred_output": [{"role": "assistant", "content": c.rejected}],
    }


def _why_not(c: Candidate, spec: StyleSpec | None, judge: str | None) -> str | None:
    """None when the pair is kept, else the reason it is not."""
    if c.error is not None or c.rejected is None:
        return f"student-failed: the student's call failed: {c.error}"
    if c.rejected.strip() == c.chosen.strip():
        return "same-reply: the student's reply is the teacher's"
    if judge is None:
        assert spec is not None
        chosen_problems = spec.check_reply(c.chosen)
        if chosen_problems:
            return f"chosen-fails-style: the teacher's reply fails the spec ({chosen_problems[0]})"
        if not spec.check_reply(c.rejected):
            return "no-margin: the student's reply passes the style spec too"
        return None
    assert c.verdicts is not None
    first, second = c.verdicts
    for v in (first, second):
        if isinstance(v, str):
            return f"judge-failed: the judge's call failed: {v}"
    assert isinstance(first, Verdict) and isinstance(second, Verdict)
    # chosen is A in the first order, B in the second
    if first.winner == "A" and second.winner == "B":
        return None
    return (
        "no-margin: the judge did not prefer the teacher's reply in both orders "
        f"(teacher first: {first.winner}, student first: {second.winner})"
    )


async def _ask(
    cands: list[Candidate],
    student: Backend,
    judge: Backend | None,
    spec: StyleSpec | None,
    calls: CallLog,
    concurrency: int,
    progress: Progress | None,
    made: dict[str, Backend],
    injected: set[str],
) -> None:
    from distill.stages.evaluate import LOCAL_BATCH

    if student.ref.provider == "local":
        concurrency = max(concurrency, LOCAL_BATCH)  # a whole batch in flight
    sem = asyncio.Semaphore(concurrency)
    total = len(cands) * (3 if judge else 1)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    async def reply(c: Candidate) -> None:
        async with sem:
            a = await ask_reply(student, calls, STAGE, c.item.context, reply_max_tokens(spec))
        c.rejected, c.error = a.text, a.error
        tick()

    async def verdict(messages: list[dict[str, Any]]) -> Verdict | str:
        assert judge is not None
        async with sem:
            v = await ask_verdict(judge, calls, STAGE, messages)
        tick()
        return v

    try:
        await asyncio.gather(*(reply(c) for c in cands))
        if cands and all(c.error for c in cands):
            raise DistillError(
                f"every call to {student.ref} failed; the first error: {cands[0].error}"
            )
        if judge is not None:
            template = judge_template()

            async def both(c: Candidate) -> None:
                if c.rejected is None:
                    tick()
                    tick()
                    return
                item = Item(c.item.id, c.item.context, NO_REFERENCE, c.item.meta)
                c.verdicts = (
                    await verdict(judge_messages(template, spec, item, c.chosen, c.rejected)),
                    await verdict(judge_messages(template, spec, item, c.rejected, c.chosen)),
                )

            await asyncio.gather(*(both(c) for c in cands))
    finally:
        for name, b in made.items():
            close = getattr(b, "aclose", None)
            if name not in injected and close is not None:
                await close()


def _reject_new(run: Run, dropped: list[tuple[dict[str, Any], str]]) -> None:
    """Append the dropped candidates to rejected.jsonl, each (id, reason) once across reruns."""
    path = run.file("rejected.jsonl")
    seen = set()
    if path.exists():
        seen = {(r.get("id"), r.get("reason")) for r in read_jsonl(path) if r.get("stage") == STAGE}
    fresh = [(rec, STAGE, why) for rec, why in dropped if (rec.get("id"), why) not in seen]
    if fresh:
        run.reject(fresh)


def load_pairs(path: Path) -> list[dict[str, Any]]:
    """pairs.jsonl's lines as {"messages", "chosen", "rejected"}; InputError naming file:line
    for a line that is not a preference pair."""
    out: list[dict[str, Any]] = []
    for lineno, obj in enumerate(read_jsonl(path), 1):
        try:
            messages = obj["input"]["messages"]
            chosen = obj["preferred_output"][0]["content"]
            rejected = obj["non_preferred_output"][0]["content"]
            ok = (
                isinstance(messages, list)
                and all(isinstance(m, dict) and "role" in m for m in messages)
                and isinstance(chosen, str)
                and isinstance(rejected, str)
            )
        except (KeyError, IndexError, TypeError):
            ok = False
        if not ok:
            raise InputError(
                f"{path}:{lineno}: not a preference pair (needs input.messages, "
                "preferred_output and non_preferred_output); rerun `distill pairs`"
            )
        out.append({"messages": messages, "chosen": chosen, "rejected": rejected})
    return out
