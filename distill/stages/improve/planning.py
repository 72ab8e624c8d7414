"""The points an improve round asks the teacher for: the candidates the run has not used yet
(customer messages it never answered, or fresh points on the spec's axes), then either weighted
toward the weakest cells (the round) or spread as the candidates come (the control)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from distill.errors import InputError
from distill.minhash import normalise
from distill.runs import Run, read_jsonl
from distill.stages.generate.customers import FROM_FILE, load_prompts
from distill.stages.generate.plan import PlanPoint, make_plan
from distill.stages.improve.cells import Cell, value_of
from distill.style import Axes, StyleSpec


def prompts_file(run: Run) -> Path | None:
    """The customer messages the run answered (`generate --prompts`), or None."""
    recorded = (run.manifest.get("inputs") or {}).get("customers") or {}
    path = recorded.get("path") if isinstance(recorded, dict) else None
    return Path(path) if path else None


def used_prompts(run: Run, earlier: list[list[dict[str, Any]]]) -> set[int]:
    """Positions of the customer messages the run's plan and earlier rounds already took."""
    used = set()
    for plan in [run.manifest.get("plan") or [], *earlier]:
        for p in plan:
            if isinstance(p, dict) and isinstance(p.get("prompt"), int):
                used.add(p["prompt"])
    return used


def held_out_questions(run: Run) -> set[str]:
    """The customers' last messages in eval.jsonl: answering one again would leak it."""
    out = set()
    path = run.file("eval.jsonl")
    if path.exists():
        for rec in read_jsonl(path):
            users = [m for m in rec.get("messages") or [] if m.get("role") == "user"]
            if users:
                out.add(normalise(str(users[-1].get("content", ""))))
    return out


def candidates(
    run: Run,
    spec: StyleSpec,
    *,
    axis: str,
    wanted: int,
    seed: int,
    round_no: int,
    earlier: list[list[dict[str, Any]]],
) -> list[PlanPoint]:
    """Points the run has not tried, in an order fixed by seed and round. With customer
    messages: those neither planned before nor held out. Else: a balanced plan on the axes
    the run recorded (or the spec's), long enough to give any one cell `wanted` points."""
    path = prompts_file(run)
    rng = random.Random(f"{seed}:improve:{round_no}")
    if path is not None:
        if not path.exists():
            raise InputError(
                f"{path}: the customer messages this run answered are missing; restore the "
                "file (improve answers more of them)"
            )
        prompts = load_prompts(path)
        used = used_prompts(run, earlier)
        held = held_out_questions(run)
        order = list(range(len(prompts)))
        rng.shuffle(order)
        out = []
        for k in order:
            p = prompts[k]
            if k in used or normalise(p.messages[-1][1]) in held:
                continue
            meta = p.meta
            out.append(
                PlanPoint(
                    0,
                    str(meta.get("topic") or FROM_FILE),
                    str(meta.get("persona") or ""),
                    str(meta.get("intent") or ""),
                    p.turns,
                    prompt=k,
                )
            )
        return out
    recorded = {k: v for k, v in (run.manifest.get("axes") or {}).items() if k != "source"}
    axes = Axes(**recorded) if recorded else spec.axes
    sizes = {
        "topic": len(axes.topics),
        "persona": len(axes.personas),
        "intent": len(axes.intents),
        "turns": len(axes.turns),
    }
    return make_plan(axes, wanted * max(1, sizes.get(axis, 1)), seed + 1_000_003 * round_no)


def targeted(points: list[PlanPoint], cells: list[Cell], most: int) -> list[PlanPoint]:
    """Up to `most` points from the given cells, each cell's share in proportion to its
    priority (smooth weighted round robin: the first n follow the weights, the rest replace
    rejected ones the same way); a cell with no candidates left drops out."""
    axis = cells[0].axis if cells else "topic"
    buckets = {
        c.value: [p for p in points if value_of(p.to_dict(), axis) == c.value] for c in cells
    }
    credit = {c.value: 0.0 for c in cells}
    out: list[PlanPoint] = []
    while len(out) < most:
        live = [c for c in cells if buckets[c.value]]
        if not live:
            break
        total = sum(c.priority for c in live)
        for c in live:
            credit[c.value] += c.priority
        best = max(live, key=lambda c: credit[c.value])
        credit[best.value] -= total
        out.append(buckets[best.value].pop(0))
    return renumber(out)


# the control's plan indices start here: a point both branches take is then sampled with
# another seed (call_seed), an independent example and never the same paid request twice
CONTROL_START = 1_000_000


def uniform(points: list[PlanPoint], most: int) -> list[PlanPoint]:
    """The control: the first `most` candidates, as they come (every cell in proportion)."""
    return renumber(points[:most], CONTROL_START)


def renumber(points: list[PlanPoint], start: int = 0) -> list[PlanPoint]:
    return [replace(p, plan_index=start + i) for i, p in enumerate(points)]
