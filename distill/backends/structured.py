"""What every real backend shares: cached schemas and validators per output type, the re-ask
message, retry timing (backoff honouring Retry-After) and rpm/tpm limits.

Building a JSON schema or a validator is the expensive part of a typed call (instructor spends
most of its ~12 ms per request there), so each is built once per output type and reused.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from distill.backends.base import InvalidOutput, Reply, Usage, _first_error


class Mode(StrEnum):
    """How the output type is asked for (instructor's modes, one per provider feature)."""

    TOOLS = "tools"  # a forced function call whose arguments are the object (OpenAI)
    JSON_SCHEMA = "json_schema"  # response_format json_schema (vLLM, LM Studio, Ollama /v1)
    JSON = "json"  # response_format json_object, schema in the prompt (older servers)


@cache
def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


@cache
def schema_text(model: type[BaseModel]) -> str:
    """The schema as JSON for grammar compilers. Key order is kept: it is the order a
    constrained model writes the fields in (the customer's message before the reply)."""
    return json.dumps(schema_of(model), separators=(",", ":"))


@cache
def adapter_of(model: type[BaseModel]) -> TypeAdapter[Any]:
    return TypeAdapter(model)


@cache
def tool_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = schema_of(model)
    return {
        "type": "function",
        "function": {
            "name": model.__name__,
            "description": (model.__doc__ or f"Return a {model.__name__}.").strip(),
            "parameters": schema,
        },
    }


def validate_text(model: type[BaseModel], text: str) -> tuple[BaseModel | None, str]:
    """(object, "") when `text` is a valid `model`, else (None, the first error in one line)."""
    try:
        return adapter_of(model).validate_json(text), ""
    except ValidationError as e:
        return None, _first_error(e)


def reask_messages(raw: str, error: str) -> list[dict[str, Any]]:
    """What is appended to the conversation when the output failed validation."""
    return [
        {"role": "assistant", "content": raw},
        {
            "role": "user",
            "content": f"That output was rejected: {error}. Reply again with the whole JSON "
            "object, corrected, and nothing else.",
        },
    ]


async def reask_loop(
    once: Callable[[list[dict[str, Any]]], Awaitable[tuple[str, Usage]]],
    messages: list[dict[str, Any]],
    response_model: type[BaseModel] | None,
    max_retries: int,
    explain: Callable[[str, Usage], str] | None = None,
) -> Reply:
    """instructor's loop, shared by every real backend: `once(conversation)` makes one call;
    a typed reply that fails validation is sent back with the error (`explain` may add to it)
    at most `max_retries` times; what still fails raises InvalidOutput with the last error."""
    usage = Usage(attempts=0)
    convo = list(messages)
    text, error = "", ""
    for _ in range(max_retries + 1):
        text, u = await once(convo)
        usage.add(u)
        if response_model is None:
            return Reply(value=text, text=text, usage=usage)
        value, error = validate_text(response_model, text)
        if value is not None:
            return Reply(value=value, text=text, usage=usage)
        if explain is not None:
            error = explain(error, u)
        convo = convo + reask_messages(text, error)
    raise InvalidOutput(error, raw=text, usage=usage)


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a server asked us to wait (Retry-After seconds or HTTP date, retry-after-ms)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(ra)
            return max(0.0, dt.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def backoff_s(attempt: int, base: float, retry_after: float | None, cap: float = 30.0) -> float:
    """Exponential backoff with jitter; a server's Retry-After wins when it is longer."""
    delay = min(cap, base * (2**attempt)) * (0.5 + random.random() / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 120.0))
    return delay


RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


class RateLimiter:
    """A token bucket refilled at `per_minute / 60` a second holding one second's worth, so
    requests are spread evenly. A request bigger than the bucket runs it into debt, which
    later requests wait out. `None` means unlimited."""

    def __init__(self, per_minute: float | None) -> None:
        self.rate = per_minute / 60 if per_minute else 0.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        if not self.rate:
            return
        need = min(amount, self.capacity)
        async with self._lock:
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.level >= need:
                    self.level -= amount
                    return
                await asyncio.sleep((need - self.level) / self.rate)


class Limits:
    """rpm and tpm limits shared by every call of one backend."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.rpm = RateLimiter(rpm)
        self.tpm = RateLimiter(tpm)

    async def acquire(self, tokens: int) -> None:
        await self.rpm.acquire(1)
        await self.tpm.acquire(tokens)


def estimate_tokens(messages: list[dict[str, Any]], max_tokens: int | None) -> int:
    """A cheap upper-ish estimate for the tpm limiter (4 characters a token)."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return chars // 4 + 4 * len(messages) + (max_tokens or 0)
