"""The plan: one point per example on the style spec's axes (topic x persona x intent x
turns), each axis covered evenly, deterministic under the seed, and the plan for n the first
n points of the plan for any larger n."""

from __future__ import annotations

import random
import re
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

from distill.style import Axes

# the plan index whose chat the running task is writing (the worker sets it): how a batched
# request is named (custom_id) after the point it belongs to
current_point: ContextVar[int | None] = ContextVar("current_point", default=None)


@dataclass(frozen=True)
class PlanPoint:
    plan_index: int
    topic: str
    persona: str
    intent: str
    turns: int
    prompt: int | None = None  # the customer message answered (--prompts), by position

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _axis_sequence(values: list[Any], n: int, rng: random.Random) -> list[Any]:
    """n values cycling through shuffled rounds of `values`: every value appears n/len times
    (within one), and the first k of a longer sequence are the same as a shorter one's."""
    out: list[Any] = []
    while len(out) < n:
        block = list(values)
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def make_plan(axes: Axes, n: int, seed: int = 0) -> list[PlanPoint]:
    """Balanced, deterministic plan points. Each axis gets its own RNG stream, so the plan
    for n is a prefix of the plan for any larger n."""
    seqs = []
    for i, values in enumerate(
        (axes.topics or ["any"], axes.personas or ["any customer"], axes.intents or ["ask"])
    ):
        seqs.append(_axis_sequence(list(values), n, random.Random(f"{seed}:{i}")))
    turns = _axis_sequence(list(axes.turns), n, random.Random(f"{seed}:turns"))
    return [PlanPoint(i, seqs[0][i], seqs[1][i], seqs[2][i], int(turns[i])) for i in range(n)]


_STOP = {"and", "the", "for", "with", "from", "into", "about", "question", "changes", "advice"}


def topic_keys(topic: str) -> list[str]:
    """Word stems that show a conversation is about `topic` (first 5 letters of each word)."""
    found = re.findall(r"[a-z]+", topic.lower())
    return [w[:5] for w in found if len(w) >= 4 and w not in _STOP]


def call_seed(seed: int, point: PlanPoint) -> int:
    """The sampling seed of a point's calls: fixed by --seed, different for every point."""
    return seed * 100_003 + point.plan_index
