"""Customer messages you already have (support logs, a prompt pool): the teacher writes only
the replies. Each message is one plan point, drawn in an order fixed by --seed, so the plan for
n is the first n points of the plan for any larger n and no message is answered twice."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import InputError
from distill.runs import read_jsonl
from distill.stages.generate.plan import PlanPoint

FROM_FILE = "(from prompts)"


@dataclass(frozen=True)
class CustomerPrompt:
    """A chat so far, ending with the customer's message (no system prompt), and its labels."""

    messages: tuple[tuple[str, str], ...]
    meta: dict[str, Any]

    def chat(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]

    @property
    def turns(self) -> int:
        return sum(1 for r, _ in self.messages if r == "user")


def load_prompts(path: Path) -> list[CustomerPrompt]:
    """`.txt`: one customer message per line. `.jsonl`: {"messages": [...]} ending with a user
    message (earlier user/assistant turns are kept as the history), optional "meta" with
    topic / persona / intent. InputError naming file:line on a bad line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: prompts file not found; pass --prompts PATH")
    out: list[CustomerPrompt] = []
    if path.suffix == ".txt":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not UTF-8 (byte {e.start}); save it as UTF-8") from None
        for text in lines:
            if text.strip():
                out.append(CustomerPrompt((("user", text.strip()),), {}))
    else:
        for lineno, rec in enumerate(read_jsonl(path), 1):
            out.append(_prompt(rec, f"{path}:{lineno}"))
    if not out:
        raise InputError(f"{path}: no customer messages; add one per line")
    return out


def _prompt(rec: dict[str, Any], where: str) -> CustomerPrompt:
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise InputError(f'{where}: expected {{"messages": [...]}} ending with a user message')
    pairs = []
    for m in msgs:
        role, content = (m.get("role"), m.get("content")) if isinstance(m, dict) else (None, None)
        if role == "system":
            continue  # the style spec's system prompt is used
        if role not in ("user", "assistant") or not isinstance(content, str) or not content.strip():
            raise InputError(
                f"{where}: every message needs role user or assistant and non-empty text content"
            )
        pairs.append((role, content.strip()))
    if not pairs or pairs[-1][0] != "user":
        raise InputError(f"{where}: the last message must be the customer's (role user)")
    if any(role != ("user", "assistant")[i % 2] for i, (role, _) in enumerate(pairs)):
        raise InputError(f"{where}: messages must alternate user, assistant, user, ...")
    meta = rec.get("meta")
    return CustomerPrompt(tuple(pairs), dict(meta) if isinstance(meta, dict) else {})


def plan_from_prompts(prompts: list[CustomerPrompt], n: int, seed: int = 0) -> list[PlanPoint]:
    """The first n prompts in an order shuffled by `seed` (all of them when n is larger)."""
    order = list(range(len(prompts)))
    random.Random(f"{seed}:prompts").shuffle(order)
    points = []
    for i, k in enumerate(order[:n]):
        p = prompts[k]
        points.append(
            PlanPoint(
                i,
                str(p.meta.get("topic") or FROM_FILE),
                str(p.meta.get("persona") or ""),
                str(p.meta.get("intent") or ""),
                p.turns,
                prompt=k,
            )
        )
    return points
