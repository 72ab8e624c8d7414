"""The seed chats: read as user/assistant exchanges, and picked to show the teacher."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from distill.errors import InputError
from distill.runs import read_jsonl
from distill.stages.generate.plan import PlanPoint, topic_keys


@dataclass
class Seed:
    exchanges: list[dict[str, str]]
    text: str

    @cached_property
    def shown(self) -> str:
        """The seed as the teacher sees it (serialised once, shown in many requests)."""
        return json.dumps({"exchanges": self.exchanges}, ensure_ascii=False)


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


@cache
def _topic_scores(texts: tuple[str, ...], topic: str) -> list[int]:
    """How often each seed names the topic's word stems (once per topic, not per request)."""
    keys = topic_keys(topic)
    return [sum(t.lower().count(key) for key in keys) for t in texts]


def shared_examples(seeds: list[Seed], k: int) -> list[Seed]:
    """The same `k` seeds for every request, spread evenly through the seeds file: a request
    that starts with the same words as the last one is served from the provider's prompt
    cache (OpenAI bills a repeated prefix of 1,024+ tokens at its cached price)."""
    k = min(k, len(seeds))
    return [seeds[i * len(seeds) // k] for i in range(k)] if k > 0 else []


def pick_examples(seeds: list[Seed], point: PlanPoint, k: int) -> list[Seed]:
    """The seed closest to the point's topic first, then others rotating with the index."""
    if k <= 0:
        return []
    scores = _topic_scores(tuple(s.text for s in seeds), point.topic)
    order = sorted(
        range(len(seeds)), key=lambda i: (-scores[i], (i - point.plan_index) % len(seeds))
    )
    first = order[0]
    rest = [(point.plan_index + j) % len(seeds) for j in range(len(seeds))]
    chosen = [first] + [i for i in rest if i != first][: k - 1]
    return [seeds[i] for i in chosen]
