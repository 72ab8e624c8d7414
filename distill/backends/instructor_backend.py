"""Providers reached through instructor (`anthropic:MODEL`, `google:MODEL`): each is a thin
factory (its SDK client, its request options, where its usage and raw output sit, which of its
errors are worth retrying) behind this one Backend.

instructor builds the provider's request for the output type (Mode.TOOLS: a forced tool call)
and validates the reply with the same pydantic model the fast paths use. It makes exactly one
request per attempt (its own max_retries=0): the re-ask is the project's one loop
(reask.py), so in generate every attempt goes through calls.sqlite, and a 429 or 5xx is
retried here with Retry-After honoured (pacing.py), the SDK's own retries turned off.
openai: and ollama: do not come here: their hand-written paths cost far less CPU per request
(benchmarks/providers.py: 0.3 ms vs 3.5 ms for Anthropic, 7.5 ms for Gemini).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from distill.backends.chat import Backend, Call
from distill.backends.pacing import (
    RETRYABLE_STATUS,
    Limits,
    backoff_s,
    estimate_tokens,
    retry_after_s,
)
from distill.backends.reply import InvalidOutput, Reply, Usage, first_error
from distill.errors import BackendError, require
from distill.models import ModelRef, Price, call_cost

# instructor logs every failed attempt at ERROR; with no logging set up Python would print
# those to stderr. Failures reach the user once, as one line, from here.
logging.getLogger("instructor").addHandler(logging.NullHandler())
logging.getLogger("instructor").propagate = False


@dataclass(frozen=True)
class Transient:
    """A failure worth retrying: its kind (for `faults`) and how long the server asked us to
    wait."""

    kind: str
    retry_after: float | None = None


@dataclass
class Output:
    """What one completion carried: the tool call's arguments as JSON (None when the model
    called no tool), its text, what it took, and whether it stopped at the token limit."""

    arguments: str | None
    text: str
    prompt_tokens: int
    completion_tokens: int
    cut: bool = False


class InstructorBackend(Backend):
    """One provider's SDK client, patched by instructor; subclasses say how to talk to it."""

    provider = ""  # the model string's prefix
    key_env: tuple[str, ...] = ()  # where the key is read from, in order
    extra = ""  # the pip extra that installs the SDK
    modules: tuple[str, ...] = ()  # what that extra provides
    default_max_tokens: int | None = 4096

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        rpm: float | None = None,
        tpm: float | None = None,
        max_http_retries: int = 6,
        backoff_base: float = 0.5,
        price: Price | None = None,
    ) -> None:
        super().__init__(ModelRef(self.provider, name), price)
        for module in self.modules:
            require(module, self.extra, f"{self.provider}:MODEL")
        self.base_url = base_url or self.env_base_url()
        key = api_key if api_key is not None else _first_env(self.key_env)
        if not key and not self.base_url:
            first = self.key_env[0]
            raise BackendError(
                f"{' or '.join(self.key_env)} is not set; export {first}=... (your "
                f"{self.provider} API key; read from the environment, never written), or pass "
                "--base-url for a server that needs none"
            )
        self._key = key or None
        self.timeout = timeout
        self.limits = Limits(rpm, tpm)
        self.max_http_retries = max_http_retries
        self.backoff_base = backoff_base
        self.faults: dict[str, int] = {}  # transient failures seen, by kind
        self._client: Any = None
        self._instructor: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}({self.ref}, base_url={self.base_url!r})"

    # -- what a provider says -------------------------------------------------------------
    def env_base_url(self) -> str | None:
        """A base URL from the provider's own environment variable, if any."""
        return None

    def wire_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation as instructor's handler for this provider takes it."""
        return messages

    def make_client(self) -> tuple[Any, Any]:
        """(the SDK's async client, instructor's client around it), retries off."""
        raise NotImplementedError

    def options(self, call: Call) -> dict[str, Any]:
        """The request's options besides the model and messages."""
        raise NotImplementedError

    def output(self, completion: Any) -> Output:
        raise NotImplementedError

    def transient(self, error: BaseException) -> Transient | None:
        """Whether an SDK error is worth retrying (429, 5xx, timeouts, lost connections)."""
        raise NotImplementedError

    def client_error(self, error: BaseException) -> str:
        """One line for an error that retrying will not fix (bad key, unknown model...)."""
        raise NotImplementedError

    async def close_client(self, client: Any) -> None:
        raise NotImplementedError

    # -- transport ------------------------------------------------------------------------
    def _get_instructor(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._instructor is None or self._loop is not loop:
            self._client, self._instructor = self.make_client()
            self._loop = loop
        return self._instructor

    async def aclose(self) -> None:
        if self._client is not None:
            await self.close_client(self._client)
        self._client = self._instructor = None

    def _count(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    # -- one attempt ----------------------------------------------------------------------
    async def attempt(self, messages: list[dict[str, Any]], call: Call) -> Reply:
        """One completion through instructor, validated by it; InvalidOutput with the first
        error (and the raw output, for the re-ask) when it does not validate."""
        from instructor.v2.core.hooks import Hooks

        limit = call.max_tokens or self.default_max_tokens
        await self.limits.acquire(estimate_tokens(messages, limit))
        t0 = time.perf_counter()
        last = ""
        for n in range(self.max_http_retries + 1):
            seen: list[Any] = []  # the completion instructor got, when the request succeeded
            hooks = Hooks()
            hooks.on("completion:response", seen.append)
            try:
                value = await self._get_instructor().create(
                    model=self.ref.name,
                    messages=self.wire_messages(messages),
                    response_model=_typed(call.response_model),
                    max_retries=0,
                    strict=False,
                    hooks=hooks,
                    **self.options(call),
                )
            except Exception as e:  # noqa: BLE001 - sorted below, never swallowed
                if seen:  # the request succeeded: the output did not validate
                    raise self._invalid(e, seen[-1], call, limit, t0) from None
                cause = _api_error(e)
                retry = self.transient(cause)
                if retry is None:
                    raise BackendError(self.client_error(cause)) from None
                self._count(retry.kind)
                last = {"connect": "cannot connect"}.get(retry.kind, retry.kind)
                last = f"HTTP {last}" if last.isdigit() else last
                if n < self.max_http_retries:
                    await asyncio.sleep(backoff_s(n, self.backoff_base, retry.retry_after))
                continue
            completion = seen[-1] if call.response_model is not None else value
            out = self.output(completion)
            usage = self._usage(out, t0)
            if call.response_model is None:
                return Reply(out.text, out.text, usage)
            # the caller's own type, not instructor's wrapper around it (already validated)
            value = call.response_model.model_construct(value.model_fields_set, **dict(value))
            return Reply(value, out.arguments or "", usage)
        if last == "cannot connect":
            raise BackendError(
                f"cannot reach {self.base_url or self.provider} ({self.ref}); is the server "
                "running? check --base-url"
            )
        raise BackendError(
            f"{self.ref}: gave up after {self.max_http_retries + 1} tries ({last}); "
            "try again later or lower --concurrency/--rpm"
        )

    def _usage(self, out: Output, t0: float) -> Usage:
        usage = Usage(
            prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens,
            latency_s=time.perf_counter() - t0,
        )
        usage.cost_usd = call_cost(self.price, usage.prompt_tokens, usage.completion_tokens)
        return usage

    def _invalid(
        self, e: BaseException, completion: Any, call: Call, limit: int | None, t0: float
    ) -> InvalidOutput:
        out = self.output(completion)
        usage = self._usage(out, t0)
        raw = out.arguments if out.arguments is not None else out.text
        name = call.response_model.__name__ if call.response_model else "a"
        cause = _validation_error(e)
        if out.cut or (limit and out.completion_tokens >= limit):
            error = f"the output was cut at {limit} tokens; keep it shorter"
        elif out.arguments is None:
            error = f"no {name} tool call in the reply; answer by calling the {name} tool"
        elif isinstance(cause, ValidationError):
            error = first_error(cause)
        else:
            error = one_line(cause) or type(cause).__name__
        return InvalidOutput(error, raw=raw, usage=usage)


@functools.cache
def _typed(model: type[BaseModel] | None) -> type[BaseModel] | None:
    """The output type as instructor wraps it, wrapped once per type: instructor wraps it
    again on every call otherwise (a new class each time, so its cached tool schema is never
    reused), which was half its CPU per request here."""
    from instructor.v2.core.function_calls import response_schema

    return response_schema(model) if model is not None else None


def _api_error(e: BaseException) -> BaseException:
    """The SDK's own error inside instructor's wrapper (it wraps every failure)."""
    from instructor.v2.core.errors import InstructorRetryException

    if isinstance(e, InstructorRetryException) and e.__cause__ is not None:
        return e.__cause__
    return e


def _validation_error(e: BaseException) -> BaseException:
    from instructor.v2.core.errors import InstructorRetryException

    if isinstance(e, InstructorRetryException):
        if e.failed_attempts:
            return e.failed_attempts[-1].exception
        if e.__cause__ is not None:
            return e.__cause__
    return e


def _first_env(names: tuple[str, ...]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def status_transient(status: int | None, headers: Mapping[str, str] | None) -> Transient | None:
    """A retryable HTTP status (429, 5xx, Anthropic's 529 overloaded) with its Retry-After."""
    if status is not None and status in RETRYABLE_STATUS:
        return Transient(str(status), retry_after_s(headers))
    return None


def one_line(x: Any) -> str:
    return " ".join(str(x).split())[:300]


def as_json(args: Any) -> str:
    return json.dumps(args, ensure_ascii=False)


def provider_backend(provider: str, name: str, **opts: Any) -> Backend:
    """The Backend for `provider:name` (anthropic, google)."""
    if provider == "anthropic":
        from distill.backends.anthropic_backend import AnthropicBackend

        return AnthropicBackend(name, **opts)
    from distill.backends.google_backend import GoogleBackend

    return GoogleBackend(name, **opts)
