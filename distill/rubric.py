"""Rubric rules: a rule that is a sentence ("offers a concrete next step"), ruled on by a
judge model. Each reply is judged once for all of a spec's rubric rules, typed, through
calls.sqlite (so a rerun pays nothing again) and costed like any call. Regex rules stay the
fast, free path (StyleSpec.check_reply)."""

from __future__ import annotations

import asyncio
import string
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from distill.backends.base import Backend, InvalidOutput, Usage, cached_chat
from distill.calls import CallLog
from distill.errors import InputError
from distill.models import parse_model
from distill.style import Rule, StyleSpec


class RuleVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    passes: bool
    reason: str = Field(max_length=300)


class Verdicts(BaseModel):
    """The judge's ruling on one reply, one verdict per rubric rule."""

    model_config = ConfigDict(extra="forbid")

    verdicts: list[RuleVerdict]


def unusable(judge: str | None) -> str | None:
    """Why `judge` cannot rule on rubric rules (None when it can)."""
    if judge is None:
        return "no judge configured"
    if parse_model(judge).provider == "local":
        return f"{judge} is a small local model, too weak to judge"
    return None


def skipped_line(spec: StyleSpec, why: str) -> str:
    """The one line that says rubric rules were not checked, and how to have them checked."""
    names = ", ".join(r.name for r in spec.rubrics)
    return (
        f"{len(spec.rubrics)} rubric rule(s) not judged ({names}): {why}; pass --judge MODEL "
        "(e.g. openai:gpt-4o-mini) to judge them"
    )


def judge_messages(spec: StyleSpec, reply: str, context: str = "") -> list[dict[str, Any]]:
    template = string.Template(
        resources.files("distill").joinpath("prompts/rubric.txt").read_text("utf-8")
    )
    rules = "\n".join(f"- {r.name}: {r.rubric}" for r in spec.rubrics)
    text = template.safe_substitute(
        system_prompt=spec.system_prompt,
        context=f"The customer wrote: {context}\n" if context else "",
        reply=reply,
        rules=rules,
    )
    return [{"role": "user", "content": text.strip()}]


@dataclass
class Judged:
    """One reply's ruling: the problems (empty when it passes) and what the call cost."""

    problems: list[str]
    failed: list[str]  # names of the rubric rules it fails
    usage: Usage = field(default_factory=Usage)
    cached: bool = False


class RubricJudge:
    """Rules on replies against a spec's rubric rules with `backend`, through `calls`."""

    def __init__(self, spec: StyleSpec, backend: Backend, calls: CallLog, stage: str) -> None:
        self.spec, self.backend, self.calls, self.stage = spec, backend, calls, stage
        self.model = str(backend.ref)

    async def judge(self, reply: str, context: str = "") -> Judged:
        """A reply the judge cannot rule on (invalid output after re-asks) fails every
        rubric rule with the judge's error, never silently passes."""
        rules: dict[str, Rule] = {r.name: r for r in self.spec.rubrics}
        try:
            got = await cached_chat(
                self.backend,
                self.calls,
                self.stage,
                judge_messages(self.spec, reply, context),
                response_model=Verdicts,
                max_retries=1,
                temperature=0.0,
                max_tokens=120 + 60 * len(rules),
            )
        except InvalidOutput as e:
            why = f"the judge {self.model} gave no usable verdict: {e}"
            return Judged([f"{n}: {why}" for n in rules], list(rules), e.usage, e.cached)
        said = {v.name: v for v in got.value.verdicts}
        problems, failed = [], []
        for name, rule in rules.items():
            v = said.get(name)
            if v is None or not v.passes:
                reason = v.reason if v else "no verdict for this rule"
                problems.append(
                    f"{name}: {rule.why or rule.rubric} (judged by {self.model}: {reason})"
                )
                failed.append(name)
        return Judged(problems, failed, got.usage, got.cached)

    async def judge_each(self, replies: list[tuple[str, str]], concurrency: int) -> list[Judged]:
        """(reply, customer message) pairs, judged `concurrency` at a time, in order."""
        gate = asyncio.Semaphore(concurrency)

        async def one(reply: str, context: str) -> Judged:
            async with gate:
                return await self.judge(reply, context)

        return list(await asyncio.gather(*(one(r, c) for r, c in replies)))

    def judge_all(self, replies: list[tuple[str, str]], concurrency: int = 8) -> list[Judged]:
        """judge_each in its own event loop, closing the judge's backend after."""

        async def every() -> list[Judged]:
            from distill.backends import close_backend

            try:
                return await self.judge_each(replies, concurrency)
            finally:
                await close_backend(self.backend)

        return asyncio.run(every())


@dataclass
class FileRuling:
    """Rubric rulings on every assistant reply of a chat file."""

    judge: str
    problems: list[str]  # "file:line: rubric: messages[i]: problem"
    passed: dict[str, int]  # rule name -> replies that keep it
    replies: int
    cost_usd: float
    cached: int


def judge_file(
    path: Any, spec: StyleSpec, judge: str, calls_path: Any, base_url: str | None = None
) -> FileRuling:
    """Judge every assistant reply in a chat JSONL file (lines that are no chat are left to
    validate's own checks) against the spec's rubric rules."""
    from distill.backends import get_backend
    from distill.runs import jsonl_lines, parse_jsonl_line

    where: list[tuple[int, int]] = []
    replies: list[tuple[str, str]] = []
    for lineno, line, _ in jsonl_lines(path):
        try:
            rec = parse_jsonl_line(path, lineno, line)
        except InputError:  # validate reports the line; there is no reply to judge
            continue
        msgs = rec.get("messages") if isinstance(rec, dict) else None
        last_user = ""
        for i, m in enumerate(msgs if isinstance(msgs, list) else []):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                continue
            if m.get("role") == "user":
                last_user = m["content"]
            elif m.get("role") == "assistant":
                where.append((lineno, i))
                replies.append((m["content"], last_user))
    calls = CallLog(calls_path)
    try:
        judged = RubricJudge(spec, get_backend(judge, base_url=base_url), calls, "judge")
        rulings = judged.judge_all(replies)
    finally:
        calls.close()
    problems = [
        f"{path}:{line}: rubric: messages[{i}]: {p}"
        for (line, i), r in zip(where, rulings, strict=True)
        for p in r.problems
    ]
    passed = {rule.name: sum(rule.name not in r.failed for r in rulings) for rule in spec.rubrics}
    return FileRuling(
        judged.model,
        problems,
        passed,
        len(replies),
        sum(r.usage.cost_usd for r in rulings if not r.cached),
        sum(r.cached for r in rulings),
    )


@dataclass
class RulePassRate:
    """One rubric rule on the held-out set: pass rates with bootstrap 95% intervals."""

    rule: str
    judge: str
    student: Any  # distill.stages.metrics.Estimate
    base: Any
    gain: Any  # paired: student - base, per item

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "judge": self.judge,
            **{k: getattr(self, k).to_dict() for k in ("student", "base", "gain")},
        }


async def pass_rates(
    judge: RubricJudge, items: list[tuple[str, str, str]], concurrency: int = 8
) -> list[RulePassRate]:
    """Per rubric rule, how often the student's and the base's replies pass, for eval:
    `items` are (customer message, student reply, base reply) on the same held-out prompts."""
    from distill.stages.metrics import bootstrap

    pairs = [(s, c) for c, s, _ in items] + [(b, c) for c, _, b in items]
    rulings = await judge.judge_each(pairs, concurrency)
    student, base = rulings[: len(items)], rulings[len(items) :]
    out = []
    for rule in judge.spec.rubrics:
        s = [float(rule.name not in r.failed) for r in student]
        b = [float(rule.name not in r.failed) for r in base]
        gain = [x - y for x, y in zip(s, b, strict=True)]
        out.append(
            RulePassRate(rule.name, judge.model, bootstrap(s), bootstrap(b), bootstrap(gain))
        )
    return out


async def eval_section(
    spec: StyleSpec | None,
    judge: Backend | None,
    why_not: str | None,
    calls: CallLog,
    stage: str,
    items: list[tuple[str, str, str]],
    concurrency: int,
) -> dict[str, Any] | None:
    """eval's report on rubric rules: per rule pass rates judged by `judge`, or the one line
    that says why they were not judged; None when the spec has no rubric rules."""
    if spec is None or not spec.rubrics:
        return None
    why = why_not or (unusable(str(judge.ref)) if judge else "no judge configured")
    if judge is None or why:
        return {"skipped": skipped_line(spec, why or "no judge configured")}
    rates = await pass_rates(RubricJudge(spec, judge, calls, stage), items, concurrency)
    return {"judge": str(judge.ref), "rules": [r.to_dict() for r in rates]}
