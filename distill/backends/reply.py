"""What a model call gives back: the reply, its usage, or InvalidOutput when it never validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from distill.errors import DistillError


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 1
    cost_usd: float = 0.0
    cached_tokens: int = 0  # prompt tokens the provider served from its prompt cache

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.cached_tokens += other.cached_tokens
        self.completion_tokens += other.completion_tokens
        self.latency_s += other.latency_s
        self.attempts += other.attempts
        self.cost_usd += other.cost_usd


@dataclass
class Reply:
    """What a call returns: `value` is the pydantic object when a response_model was given,
    else the reply text; `text` is always the raw text the model produced. `cached`: replayed
    from calls.sqlite, nothing was sent or paid for."""

    value: Any
    text: str
    usage: Usage = field(default_factory=Usage)
    cached: bool = False


class InvalidOutput(DistillError):
    """The model's output still failed validation after every re-ask. `cached`: the failure
    was replayed from calls.sqlite (nothing sent, nothing paid this time)."""

    def __init__(
        self, message: str, raw: str = "", usage: Usage | None = None, cached: bool = False
    ) -> None:
        super().__init__(message)
        self.raw = raw
        self.usage = usage or Usage()
        self.cached = cached


def first_error(e: ValidationError) -> str:
    """A validation error in one line: where, then what."""
    errs = e.errors()
    if not errs:
        return str(e)
    loc = ".".join(str(x) for x in errs[0]["loc"])
    msg = errs[0]["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg
