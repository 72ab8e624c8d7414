"""The seed chats: read as user/assistant exchanges, and picked to show the teacher."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.errors import InputError
from distill.runs import read_jsonl
from distill.stages.generate.plan import PlanPoint, topic_keys


@dataclass
class Seed:
    exchanges: list[dict[str, str]]
    text: str


def load_seeds(path: Path) -> list[Seed]:
    """Seed chats as user/assistant exchanges; InputError naming file:line on a bad one."""
    seeds = []
    for lineno, rec in enumerate(read_jsonl(path), 1):
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise InputError(f'{path}:{lineno}: expected {{"messages": [...]}} (chat format)')
        pairs: list[dict[str, str]] = []
        pending: str | None = None
        for m in msgs:
            role, content = m.get("role"), m.get("content")
            if role == "user":
                pending = str(content or "")
            elif role == "assistant" and pending is not None:
                pairs.append({"user": pending, "assistant": str(content or "")})
                pending = None
        if not pairs:
            raise InputError(f"{path}:{lineno}: no user message followed by an assistant reply")
        text = " ".join(f"{p['user']} {p['assistant']}" for p in pairs)
        seeds.append(Seed(pairs, text))
    if not seeds:
        raise InputError(f"{path}: no seed conversations; add some chat-format lines")
    return seeds


def pick_examples(seeds: list[Seed], point: PlanPoint, k: int) -> list[Seed]:
    """The seed closest to the point's topic first, then others rotating with the index."""
    if k <= 0:
        return []
    keys = topic_keys(point.topic)
    scores = [sum(s.text.lower().count(key) for key in keys) for s in seeds]
    order = sorted(
        range(len(seeds)), key=lambda i: (-scores[i], (i - point.plan_index) % len(seeds))
    )
    first = order[0]
    rest = [(point.plan_index + j) % len(seeds) for j in range(len(seeds))]
    chosen = [first] + [i for i in rest if i != first][: k - 1]
    return [seeds[i] for i in chosen]
