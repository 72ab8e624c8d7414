"""What a teacher proposes for a draft spec, typed: a description, scope, diversity axes and
candidate voice rules, asked once through calls.sqlite like every generate call."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distill.backends import close_backend, get_backend
from distill.backends.base import InvalidOutput, cached_chat
from distill.calls import CallLog
from distill.errors import BackendError, MissingExtra
from distill.models import parse_model
from distill.stages.draft.measure import Measured
from distill.stages.generate.prompts import format_examples, render
from distill.stages.generate.seeds import load_seeds
from distill.style import Rule

STAGE = "init"  # what calls.sqlite files these calls under
SHOWN = 12  # seed chats shown to the teacher


class ProposedRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,40}$")
    why: str = Field(min_length=3, max_length=200)
    kind: Literal["must_match", "must_not_match", "first_sentence_must_match"]
    pattern: str = Field(min_length=2, max_length=400)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid Python regex: {e}") from None
        return v

    def to_rule(self) -> Rule:
        return Rule(name=self.name, why=self.why, **{self.kind: self.pattern})


class ProposedSpec(BaseModel):
    """The parts of a style spec a teacher proposes from the seeds."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=10, max_length=800)
    scope: str = Field(min_length=5, max_length=400)
    system_prompt: str = Field(min_length=10, max_length=400)
    topics: list[str] = Field(min_length=3, max_length=20)
    personas: list[str] = Field(min_length=2, max_length=10)
    intents: list[str] = Field(min_length=2, max_length=8)
    rules: list[ProposedRule] = Field(default_factory=list, max_length=8)


@dataclass
class Proposal:
    spec: ProposedSpec | None
    teacher: str
    note: str = ""  # one line on what could not be proposed, and why
    tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False


def capable(teacher: str | None) -> str | None:
    """Why `teacher` cannot propose (None when it may): no teacher named, or the embedded
    model, which is too small to write a spec (and would be loaded for nothing)."""
    if teacher is None:
        return "no --teacher given"
    if parse_model(teacher).provider == "local":
        return f"{teacher} is too small to propose them"
    return None


def ask_teacher(
    seeds: Path,
    measured: Measured,
    business: str,
    teacher: str | None,
    calls_path: Path,
    base_url: str | None = None,
) -> Proposal:
    """Ask `teacher` once (cached in `calls_path`); never raises for a teacher that cannot
    answer: the Proposal's note says what went wrong."""
    what = "description, scope, topics, personas, intents and rules"
    if (why := capable(teacher)) is not None:
        hint = "rerun with --teacher openai:gpt-4o (or ollama:MODEL) to have them proposed"
        return Proposal(None, teacher or "", f"Not proposed ({why}): {what}; {hint}.")
    assert teacher is not None
    user = render(
        "draft",
        business=business,
        examples=format_examples(load_seeds(seeds)[:SHOWN]),
        system_prompt=measured.system_prompt,
        min_words=measured.words[0],
        max_words=measured.words[1],
        max_sentences=measured.sentences,
    )
    messages = [
        {"role": "system", "content": "You write style specs for support assistants."},
        {"role": "user", "content": user},
    ]
    calls = CallLog(calls_path)
    try:
        backend = get_backend(teacher, base_url=base_url)
        teacher = str(backend.ref)  # as calls.sqlite names it: openai:gpt-4o for gpt-4o

        async def ask():  # noqa: ANN202 - a Reply
            try:
                return await cached_chat(
                    backend,
                    calls,
                    STAGE,
                    messages,
                    response_model=ProposedSpec,
                    max_retries=2,
                    temperature=0.3,
                    max_tokens=1500,
                )
            finally:
                await close_backend(backend)

        reply = asyncio.run(ask())
    except (InvalidOutput, BackendError, MissingExtra) as e:
        reason = " ".join(str(e).split())
        return Proposal(None, teacher, f"Not proposed ({teacher} could not: {reason}): {what}.")
    finally:
        calls.close()
    u = reply.usage
    return Proposal(
        reply.value,
        teacher,
        tokens=u.prompt_tokens + u.completion_tokens,
        cost_usd=u.cost_usd or 0.0,
        cached=reply.cached,
    )
