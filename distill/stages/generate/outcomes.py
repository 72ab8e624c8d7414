"""What became of each plan point, as the lines generate writes (generated.jsonl, or
rejected.jsonl with the reason) and reads back on a rerun."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from distill.records import Example
from distill.runs import Run, read_jsonl
from distill.stages.generate.plan import PlanPoint
from distill.stages.generate.teacher import STAGE
from distill.style import StyleSpec


@dataclass
class Outcome:
    """A chat that passed every check (`exchanges`), or the last output and why it failed."""

    point: PlanPoint
    attempts: int
    exchanges: list[dict[str, str]] | None = None
    raw: str = ""
    error: str = ""


def exchanges_of(value: Any) -> list[dict[str, str]]:
    """The user/assistant pairs of a validated conversation."""
    return [{"user": ex.user, "assistant": ex.assistant} for ex in value.exchanges]


def _meta(outcome: Outcome, teacher: str) -> dict[str, Any]:
    return {
        **outcome.point.to_dict(),
        "teacher": teacher,
        "attempts": outcome.attempts,
        "source": STAGE,
    }


def example_of(spec: StyleSpec, outcome: Outcome, teacher: str) -> Example:
    """The example a passing chat becomes, under the spec's system prompt."""
    assert outcome.exchanges is not None
    messages = [{"role": "system", "content": spec.system_prompt}]
    for ex in outcome.exchanges:
        messages.append({"role": "user", "content": ex["user"].strip()})
        messages.append({"role": "assistant", "content": ex["assistant"].strip()})
    return Example.model_validate({"messages": messages, "meta": _meta(outcome, teacher)})


def rejected_row(outcome: Outcome, teacher: str) -> tuple[dict[str, Any], str, str]:
    """(record, stage, reason) for rejected.jsonl: the last raw output and its problem."""
    record = {
        "id": f"plan-{outcome.point.plan_index}",
        "messages": [],
        "meta": {**_meta(outcome, teacher), "raw": outcome.raw[:4000]},
    }
    return record, STAGE, f"invalid after {outcome.attempts} attempt(s): {outcome.error}"


@dataclass
class Done:
    """What a run folder already holds: plan indices generated and rejected, example ids."""

    generated: set[int] = field(default_factory=set)
    rejected: set[int] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)

    def __contains__(self, index: int) -> bool:
        return index in self.generated or index in self.rejected


def done_so_far(run: Run) -> Done:
    done = Done()
    gen = run.file("generated.jsonl")
    if gen.exists():
        for rec in read_jsonl(gen):
            done.ids.add(str(rec.get("id")))
            idx = (rec.get("meta") or {}).get("plan_index")
            if isinstance(idx, int):
                done.generated.add(idx)
    rej = run.file("rejected.jsonl")
    if rej.exists():
        for row in read_jsonl(rej):
            if row.get("stage") != STAGE:
                continue
            idx = ((row.get("example") or {}).get("meta") or {}).get("plan_index")
            if isinstance(idx, int):
                done.rejected.add(idx)
    return done


def reject_reasons(run: Run, limit: int = 5) -> list[tuple[str, int]]:
    """The most common reasons generation rejected examples (for the summary line)."""
    path = run.file("rejected.jsonl")
    if not path.exists():
        return []
    reasons: Counter[str] = Counter()
    for row in read_jsonl(path):
        if row.get("stage") == STAGE:
            reason = str(row.get("reason", ""))
            reason = re.sub(r"^invalid after \d+ attempt\(s\): ", "", reason)
            reason = re.sub(r"exchange \d+( reply)?: ", "", reason).split(";")[0].split(" (")[0]
            reasons[reason[:80]] += 1
    return reasons.most_common(limit)
