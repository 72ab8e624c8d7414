"""The voice as data: a StyleSpec loaded from TOML, used by generate, validate, review and eval."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distill.errors import ConfigError

_SENTENCE_END = re.compile(r"[.!?]+(?:\s+|$)")
_WORD = re.compile(r"\b[\w'’-]+\b")


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def count_sentences(text: str) -> int:
    parts = [p for p in _SENTENCE_END.split(text.strip()) if p.strip()]
    return max(len(parts), 1 if text.strip() else 0)


def first_sentence(text: str) -> str:
    m = _SENTENCE_END.search(text)
    return text[: m.end()].strip() if m else text.strip()


class Rule(BaseModel):
    """One rule on a reply: a regex (one of the pattern fields, checked here, free) or a
    `rubric`, a sentence a judge model rules on (distill/rubric.py). Exactly one is set."""

    model_config = ConfigDict(extra="forbid")

    name: str
    why: str = ""
    must_match: str | None = None
    must_not_match: str | None = None
    first_sentence_must_match: str | None = None
    rubric: str | None = None  # e.g. "offers a concrete next step"

    @model_validator(mode="after")
    def _one_pattern(self) -> Rule:
        set_ = [
            p for p in (self.must_match, self.must_not_match, self.first_sentence_must_match) if p
        ]
        if len(set_) + bool(self.rubric) != 1:
            raise ValueError(
                f"rule {self.name!r} needs exactly one of must_match, must_not_match, "
                "first_sentence_must_match, rubric"
            )
        if self.rubric:
            return self
        try:
            re.compile(set_[0])
        except re.error as e:
            raise ValueError(f"rule {self.name!r}: bad regex {set_[0]!r}: {e}") from e
        return self

    def check(self, text: str) -> str | None:
        """None when the reply passes, else the violation message (a rubric rule always
        passes here: only a judge can rule on it)."""
        label = self.why or self.name
        if self.must_match and not re.search(self.must_match, text, re.M):
            return f"{self.name}: {label}"
        if self.must_not_match and (m := re.search(self.must_not_match, text, re.M)):
            return f"{self.name}: {label} (found {m.group(0)!r})"
        if self.first_sentence_must_match and not re.search(
            self.first_sentence_must_match, first_sentence(text)
        ):
            return f"{self.name}: {label}"
        return None


class ReplyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_words: int = Field(default=1, ge=0)
    max_words: int = Field(default=80, ge=1)
    max_sentences: int = Field(default=5, ge=1)


class Axes(BaseModel):
    """The diversity axes generation samples from; empty means 'ask the teacher'."""

    model_config = ConfigDict(extra="forbid")

    topics: list[str] = Field(default_factory=list)
    personas: list[str] = Field(default_factory=list)
    intents: list[str] = Field(default_factory=list)
    turns: list[int] = Field(default_factory=lambda: [1])

    @field_validator("turns")
    @classmethod
    def _turns_positive(cls, v: list[int]) -> list[int]:
        if not v or any(t < 1 or t > 20 for t in v):
            raise ValueError("turns must be a non-empty list of integers between 1 and 20")
        return v

    def is_empty(self) -> bool:
        return not (self.topics or self.personas or self.intents)


class Scope(BaseModel):
    """What the assistant is for; off-topic requests get a polite redirect."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    off_topic_markers: list[str] = Field(default_factory=list)


# Phrases that give away who is talking in almost any support chat; a spec adds its own.
CUSTOMER_SAYS = (
    "my order",
    "i ordered",
    "i bought",
    "i received my",
    "where is my",
    "i want a refund",
    "i'd like a refund",
)
AGENT_SAYS = (
    "how can i help",
    "how may i help",
    "how can i assist",
    "how may i assist",
    "thanks for contacting",
    "thank you for contacting",
    "welcome to",
)


class Roles(BaseModel):
    """Phrases only one side of the chat says (whole words, any case): a reply that says a
    customer's phrase, or a customer message that says the agent's, has the roles swapped."""

    model_config = ConfigDict(extra="forbid")

    customer_says: list[str] = Field(default_factory=lambda: list(CUSTOMER_SAYS))
    agent_says: list[str] = Field(default_factory=lambda: list(AGENT_SAYS))


class Quality(BaseModel):
    """Checks on what a teacher writes beyond the reply rules (distill/quality.py)."""

    model_config = ConfigDict(extra="forbid")

    # every customer message and reply must read as this language ("" turns the check off;
    # only "en" has a word list today)
    language: Literal["en", ""] = "en"


class StyleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    system_prompt: str
    description: str = ""
    reply: ReplyLimits = Field(default_factory=ReplyLimits)
    rules: list[Rule] = Field(default_factory=list)
    axes: Axes = Field(default_factory=Axes)
    scope: Scope = Field(default_factory=Scope)
    roles: Roles = Field(default_factory=Roles)
    quality: Quality = Field(default_factory=Quality)
    source: str = Field(default="", exclude=True)

    @classmethod
    def load(cls, path: str | Path) -> StyleSpec:
        """Load a style TOML; any problem becomes one ConfigError naming file and key."""
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"{p}: style spec not found; pass --style PATH to an existing .style.toml"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not UTF-8 text; save the style spec as UTF-8") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: invalid TOML: {e}") from None
        return cls.from_dict(raw, source=str(p))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<style>") -> StyleSpec:
        try:
            spec = cls.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(x) for x in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check spelling against the README's style spec section)"
            raise ConfigError(f"{source}: {key}: {msg}") from None
        spec.source = source
        return spec

    @property
    def rubrics(self) -> list[Rule]:
        """The rules a judge model rules on; check_reply does not see them."""
        return [r for r in self.rules if r.rubric]

    def check_reply(self, text: str) -> list[str]:
        """Every way this reply breaks the voice; empty when it passes."""
        problems: list[str] = []
        words, sentences = count_words(text), count_sentences(text)
        if words > self.reply.max_words:
            problems.append(f"too-long: {words} words, the limit is {self.reply.max_words}")
        if words < self.reply.min_words:
            problems.append(f"too-short: {words} words, the minimum is {self.reply.min_words}")
        if sentences > self.reply.max_sentences:
            problems.append(
                f"too-many-sentences: {sentences} sentences, the limit is {self.reply.max_sentences}"
            )
        for rule in self.rules:
            if (msg := rule.check(text)) is not None:
                problems.append(msg)
        return problems

    def check_messages(self, messages: list[Any]) -> list[tuple[int, str]]:
        """(message index, problem) for every assistant reply and a system-prompt mismatch."""
        out: list[tuple[int, str]] = []
        for i, m in enumerate(messages):
            role = m["role"] if isinstance(m, dict) else m.role
            content = m.get("content") if isinstance(m, dict) else m.content
            if role == "system" and content != self.system_prompt:
                out.append((i, "system-prompt: differs from the style spec's system_prompt"))
            if role == "assistant" and isinstance(content, str):
                out.extend((i, p) for p in self.check_reply(content))
        return out
