"""The draft spec as TOML text a person edits: every part with a comment on where it came
from. Written by hand (no TOML writer is a dependency), then read back by StyleSpec."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from distill.style import Rule


@dataclass
class Part:
    """A value with the comment that says how it was found."""

    value: object
    origin: str


@dataclass
class DraftRule:
    rule: Rule
    origin: str
    broken_by: list[int] = field(default_factory=list)  # the seed lines that break it

    def where(self, seeds: str) -> str:
        """The seeds that break it, as `shop.jsonl lines 1, 3 and 4`."""
        lines = [str(n) for n in self.broken_by]
        if len(lines) > 1:
            return f"{seeds} lines {', '.join(lines[:-1])} and {lines[-1]}"
        return f"{seeds} line {lines[0]}" if lines else ""


def basic(s: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, but TOML wants DEL escaped too)."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def regex(s: str) -> str:
    """A TOML literal string when the pattern allows one (no backslashes to double)."""
    if any(ord(c) < 32 or ord(c) == 0x7F for c in s) or "'''" in s or s.endswith("'"):
        return basic(s)
    return f"'''{s}'''" if "'" in s else f"'{s}'"


def strings(items: list[str]) -> str:
    if not items:
        return "[]"
    return "[\n" + "".join(f"  {basic(x)},\n" for x in items) + "]"


def comment(text: str) -> str:
    return "".join(f"# {line}\n" for line in text.splitlines())


def rule_text(d: DraftRule) -> str:
    r = d.rule
    kind, pattern = next(
        (k, v)
        for k, v in (
            ("must_match", r.must_match),
            ("must_not_match", r.must_not_match),
            ("first_sentence_must_match", r.first_sentence_must_match),
            ("rubric", r.rubric),
        )
        if v
    )
    return f"name = {basic(r.name)}\nwhy = {basic(r.why)}\n{kind} = {regex(pattern)}\n"


def spec_text(
    seeds: str,
    header: str,
    name: str,
    system_prompt: Part,
    description: Part,
    reply: Part,
    rules: list[DraftRule],
    scope: Part,
    axes: Part,
    turns: Part,
) -> str:
    """The whole draft. Rules that some seed breaks are written commented out, with the
    seeds that break them, so a person can fix or delete them."""
    limits: dict[str, int] = reply.value  # type: ignore[assignment]
    topics: dict[str, list[str]] = axes.value  # type: ignore[assignment]
    out = [comment(header), f"name = {basic(name)}\n"]
    out += [comment(system_prompt.origin), f"system_prompt = {basic(str(system_prompt.value))}\n"]
    out += [comment(description.origin), f"description = {basic(str(description.value))}\n"]
    out += ["\n[reply]\n", comment(reply.origin)]
    out += [f"{k} = {v}\n" for k, v in limits.items()]
    for d in rules:
        body = rule_text(d)
        if d.broken_by:
            out += [
                "\n",
                comment(f"DROPPED: {d.origin}, but your own seeds break it ({d.where(seeds)})."),
                comment("Fix the pattern or delete it; uncomment to use it."),
                comment("[[rules]]\n" + body),
            ]
        else:
            out += ["\n[[rules]]\n", comment(d.origin), body]
    out += ["\n[scope]\n", comment(scope.origin), f"description = {basic(str(scope.value))}\n"]
    out += ["off_topic_markers = []\n"]
    out += ["\n[axes]\n", comment(axes.origin)]
    out += [f"{k} = {strings(v)}\n" for k, v in topics.items()]
    out += [comment(turns.origin), f"turns = {json.dumps(turns.value)}\n"]
    return "".join(out)
