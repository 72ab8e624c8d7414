"""The one interface every teacher, student and judge sits behind, and the fake used in tests.

A backend takes chat messages and returns either text or a validated pydantic object, plus
usage. Re-asking on validation errors is the backend's job (bounded by `max_retries`); what
still fails raises `InvalidOutput` carrying the last validation message.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from distill.calls import CallLog, CallRecord, request_key
from distill.errors import DistillError
from distill.models import ModelRef, call_cost

T = TypeVar("T", bound=BaseModel)


class InvalidOutput(DistillError):
    """The model's output still failed validation after every re-ask."""

    def __init__(self, message: str, raw: str = "", usage: Usage | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.usage = usage or Usage()


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 1
    cost_usd: float = 0.0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.latency_s += other.latency_s
        self.attempts += other.attempts
        self.cost_usd += other.cost_usd


@dataclass
class Reply:
    """What a call returns: `value` is the pydantic object when a response_model was given,
    else the reply text; `text` is always the raw text the model produced."""

    value: Any
    text: str
    usage: Usage = field(default_factory=Usage)
    cached: bool = False


class Backend(Protocol):
    ref: ModelRef

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        response_model: type[BaseModel] | None = None,
        max_retries: int = 2,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> Reply: ...


Answer = str | dict[str, Any] | BaseModel | Exception | Callable[[list[dict[str, Any]]], Any]


class FakeBackend:
    """A backend with queued answers and a request history, for tests.

    Each call pops the next answer (or calls `default(messages)` when the queue is empty).
    An answer may be text, a dict or model (validated into response_model), an Exception to
    raise, or a callable taking the messages. Validation failures are re-asked like a real
    backend: the error is appended to the conversation and the next answer is taken.
    """

    def __init__(
        self,
        answers: list[Answer] | None = None,
        default: Callable[[list[dict[str, Any]]], Any] | None = None,
        name: str = "fake",
    ) -> None:
        self.ref = ModelRef("fake", name)
        self.answers: list[Answer] = list(answers or [])
        self.default = default
        self.requests: list[list[dict[str, Any]]] = []

    def _next(self, messages: list[dict[str, Any]]) -> Any:
        self.requests.append(messages)
        if self.answers:
            a = self.answers.pop(0)
        elif self.default is not None:
            a = self.default
        else:
            raise AssertionError("FakeBackend: no answer queued")
        if isinstance(a, Exception):
            raise a
        if callable(a) and not isinstance(a, BaseModel):
            a = a(messages)
        return a

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        response_model: type[BaseModel] | None = None,
        max_retries: int = 2,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> Reply:
        usage = Usage(attempts=0)
        convo = list(messages)
        last_error = ""
        for _ in range(max_retries + 1):
            await asyncio.sleep(0)
            t0 = time.perf_counter()
            a = self._next(convo)
            text = (
                a
                if isinstance(a, str)
                else json.dumps(a.model_dump() if isinstance(a, BaseModel) else a)
            )
            usage.add(
                Usage(
                    prompt_tokens=sum(len(str(m.get("content", "")).split()) for m in convo),
                    completion_tokens=len(text.split()),
                    latency_s=time.perf_counter() - t0,
                )
            )
            if response_model is None:
                return Reply(value=text, text=text, usage=usage)
            try:
                value = response_model.model_validate_json(text)
                return Reply(value=value, text=text, usage=usage)
            except ValidationError as e:
                last_error = _first_error(e)
                convo = convo + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": f"Please correct the output: {last_error}"},
                ]
        raise InvalidOutput(last_error, raw=text, usage=usage)


@functools.cache
def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """A type's JSON schema, built once (building it costs ~2 ms, more than the whole call)."""
    return model.model_json_schema()


def _first_error(e: ValidationError) -> str:
    errs = e.errors()
    if not errs:
        return str(e)
    loc = ".".join(str(x) for x in errs[0]["loc"])
    msg = errs[0]["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


async def cached_chat(
    backend: Backend,
    calls: CallLog,
    stage: str,
    messages: list[dict[str, Any]],
    *,
    response_model: type[BaseModel] | None = None,
    **opts: Any,
) -> Reply:
    """`backend.chat` through calls.sqlite: a finished call is never sent twice.

    The key covers the model, messages, options and output type, so a changed prompt is a
    new call. Failed calls (InvalidOutput) are recorded with their error and cached too, so a
    resume does not pay again for an answer that already failed every re-ask."""
    request = {
        "messages": messages,
        "response_model": response_model.__name__ if response_model else None,
        "schema": _schema_of(response_model) if response_model else None,
        **opts,
    }
    model = str(backend.ref)
    key = request_key(model, request)
    hit = calls.get(key)
    if hit is not None:
        resp = hit.response
        usage = Usage(
            hit.prompt_tokens, hit.completion_tokens, hit.latency_s, hit.attempts, hit.cost_usd
        )
        if hit.error:
            raise InvalidOutput(hit.error, raw=resp.get("text", ""), usage=usage)
        value = response_model.model_validate(resp["value"]) if response_model else resp["text"]
        return Reply(value=value, text=resp["text"], usage=usage, cached=True)
    try:
        reply = await backend.chat(messages, response_model=response_model, **opts)
    except InvalidOutput as e:
        e.usage.cost_usd = (
            call_cost(backend.ref.name, e.usage.prompt_tokens, e.usage.completion_tokens)
            if backend.ref.provider == "openai"
            else 0.0
        )
        calls.put(_record(key, stage, model, request, {"text": e.raw}, e.usage, error=str(e)))
        raise
    u = reply.usage
    if backend.ref.provider == "openai" and not u.cost_usd:
        u.cost_usd = call_cost(backend.ref.name, u.prompt_tokens, u.completion_tokens)
    value = (
        reply.value.model_dump(mode="json") if isinstance(reply.value, BaseModel) else reply.value
    )
    calls.put(_record(key, stage, model, request, {"text": reply.text, "value": value}, u))
    return reply


def _record(
    key: str,
    stage: str,
    model: str,
    request: Any,
    response: Any,
    u: Usage,
    error: str | None = None,
) -> CallRecord:
    return CallRecord(
        key=key,
        stage=stage,
        model=model,
        request=request,
        response=response,
        error=error,
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cost_usd=u.cost_usd,
        latency_s=u.latency_s,
        attempts=u.attempts,
    )
