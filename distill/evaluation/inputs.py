"""What eval reads: the held-out items, the probe, the judge's prompt and answer type."""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from distill.errors import InputError, UsageError
from distill.records import content_id
from distill.runs import (
    Run,
)
from distill.style import StyleSpec

REPLY_MAX_TOKENS = 256  # without a style spec; with one, see reply_max_tokens()
PROBE_MAX_TOKENS = 32  # probe answers are a number, a word or a short line
JUDGE_MAX_TOKENS = 300


class Verdict(BaseModel):
    """The judge's answer for one ordered pair."""

    reason: str = Field(default="", description="one sentence")
    winner: Literal["A", "B", "tie"]


@dataclass
class Item:
    """One held-out example: the context both models see and the reply held out from it."""

    id: str
    context: list[dict[str, Any]]
    reference: str
    meta: dict[str, Any] = field(default_factory=dict)  # the plan point (topic, persona, ...)


def load_style(run: Run) -> StyleSpec | None:
    """The run's style spec (manifest inputs.style.path), or None when the run has none."""
    m = run.manifest
    style = (m.get("inputs") or {}).get("style")
    path = style.get("path") if isinstance(style, dict) else style
    if not path:
        return None
    p = Path(path)
    if not p.is_absolute() and not p.exists() and (run.path / p).exists():
        p = run.path / p
    return StyleSpec.load(p)


def held_out_items(
    records: Sequence[dict[str, Any]], system_prompt: str | None
) -> tuple[list[Item], list[tuple[dict[str, Any], str]]]:
    """Split each eval example into (context, reference); examples with nothing to hold out
    come back separately with the reason."""
    items: list[Item] = []
    skipped: list[tuple[dict[str, Any], str]] = []
    for rec in records:
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not msgs:
            skipped.append((rec, "no messages"))
            continue
        last = max(
            (
                i
                for i, mm in enumerate(msgs)
                if isinstance(mm, dict) and mm.get("role") == "assistant"
            ),
            default=None,
        )
        if last is None or not isinstance(msgs[last].get("content"), str):
            skipped.append((rec, "no assistant reply to hold out"))
            continue
        before = [{"role": mm["role"], "content": mm.get("content") or ""} for mm in msgs[:last]]
        if not any(mm["role"] == "user" for mm in before):
            skipped.append((rec, "no user message before the last assistant reply"))
            continue
        if system_prompt is not None:
            before = [{"role": "system", "content": system_prompt}] + [
                mm for mm in before if mm["role"] != "system"
            ]
        meta: dict[str, Any] = rec["meta"] if isinstance(rec.get("meta"), dict) else {}
        items.append(
            Item(str(rec.get("id") or content_id(msgs)), before, msgs[last]["content"], meta)
        )
    return items, skipped


def load_probe(path: Path | None = None) -> list[dict[str, Any]]:
    """The general-skills probe: prompts with checkable answers."""
    if path is None:
        text = resources.files("distill").joinpath("prompts/probe.jsonl").read_text("utf-8")
        source = "distill/prompts/probe.jsonl"
    else:
        text, source = Path(path).read_text(encoding="utf-8"), str(path)
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            assert isinstance(item, dict) and item["prompt"] and "answer" in item
        except (json.JSONDecodeError, AssertionError, KeyError):
            raise InputError(
                f"{source}:{lineno}: a probe line needs prompt, answer and check"
            ) from None
        if item.get("check", "contains") not in ("contains", "regex", "number"):
            raise InputError(f"{source}:{lineno}: check must be contains, regex or number")
        item.setdefault("id", f"probe-{lineno}")
        out.append(item)
    return out


def probe_subset(probe: list[dict[str, Any]], size: int | None) -> list[dict[str, Any]]:
    """`size` items spread evenly over the probe, every skill in its share (the same items on
    every run, so a smaller probe is still paired across students)."""
    if size is None or size >= len(probe):
        return probe
    if size < 1:
        raise UsageError(f"--probe-size must be at least 1, not {size}")
    step = len(probe) / size
    return [probe[int(i * step)] for i in range(size)]


def reply_max_tokens(spec: StyleSpec | None) -> int:
    """Tokens a held-out reply may take: enough to break the spec's word limit (so capping never
    turns a failing reply into a passing one), not the 256 a rambling base model would use."""
    if spec is None or not spec.reply.max_words:
        return REPLY_MAX_TOKENS
    return min(REPLY_MAX_TOKENS, 2 * spec.reply.max_words + 16)


def judge_template() -> string.Template:
    return string.Template(
        resources.files("distill").joinpath("prompts/judge.txt").read_text("utf-8")
    )


def judge_messages(
    template: string.Template,
    style: StyleSpec | None,
    item: Item,
    reply_a: str,
    reply_b: str,
) -> list[dict[str, Any]]:
    convo = "\n".join(
        f"{m['role'].upper()}: {m['content']}" for m in item.context if m["role"] != "system"
    )
    rules = "\n".join(f"- {r.why or r.name}" for r in style.rules) if style else "- (none given)"
    if style:
        rules += (
            f"\n- at most {style.reply.max_words} words and {style.reply.max_sentences} sentences"
        )
    voice = (style.system_prompt + "\n" + style.description).strip() if style else ""
    system = next((m["content"] for m in item.context if m["role"] == "system"), "")
    prompt = template.safe_substitute(
        style=voice or system or "(no style given)",
        rules=rules,
        conversation=convo,
        reference=item.reference,
        reply_a=reply_a,
        reply_b=reply_b,
    )
    return [{"role": "user", "content": prompt}]
