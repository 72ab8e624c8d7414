"""`openai:MODEL`: OpenAI or any OpenAI-compatible server (`--base-url`).

Typed calls follow instructor's recipe (a mode per provider, validation errors fed back as a
bounded re-ask) but talk to /v1/chat/completions over one pooled aiohttp session with the
schema, tool definition and validator built once per output type. The openai SDK plus
instructor cost ~12 ms of CPU per request here; this path costs ~1 ms, which is what lets 64
requests in flight reach 0.9 of the server's limit (benchmarks/generate.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import aiohttp

from distill.backends.chat import Backend, Call
from distill.backends.pacing import (
    RETRYABLE_STATUS,
    Limits,
    backoff_s,
    estimate_tokens,
    retry_after_s,
)
from distill.backends.reply import Usage
from distill.backends.structured import Mode, schema_of, tool_of
from distill.errors import BackendError
from distill.models import ModelRef, Price

OPENAI_URL = "https://api.openai.com/v1"


class TransientError(Exception):
    """A failure worth retrying (429, 5xx, timeout, broken body)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def default_mode(base_url: str) -> Mode:
    """Tool calling on OpenAI itself; JSON schema on compatible servers, where tool calling is
    often missing or weaker."""
    return Mode.TOOLS if "api.openai.com" in base_url else Mode.JSON_SCHEMA


def usage_of(data: dict[str, Any]) -> Usage:
    """A chat completion's usage, with the prompt tokens served from the prompt cache."""
    u = data.get("usage") or {}
    details = u.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(u.get("prompt_tokens") or 0),
        completion_tokens=int(u.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


class OpenAIBackend(Backend):
    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        mode: Mode | str | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        max_http_retries: int = 6,
        backoff_base: float = 0.5,
        max_connections: int = 256,
        price: Price | None = None,
    ) -> None:
        super().__init__(ModelRef("openai", name), price)
        url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
        self.base_url = url
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if not key and "api.openai.com" in url:
            raise BackendError(
                "OPENAI_API_KEY is not set; export OPENAI_API_KEY=sk-... (or pass --base-url "
                "for an OpenAI-compatible server)"
            )
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self.mode = Mode(mode) if mode else default_mode(url)
        self.timeout = timeout
        self.limits = Limits(rpm, tpm)
        self.max_http_retries = max_http_retries
        self.backoff_base = backoff_base
        self.max_connections = max_connections
        self.faults: dict[str, int] = {}  # transient failures seen, by kind (for reports/tests)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend({self.ref}, base_url={self.base_url!r}, mode={self.mode.value})"

    # -- transport ------------------------------------------------------------------------
    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self._headers,
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _count(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """One completion, retried on transient failures; BackendError when it cannot be had."""
        url = self.base_url + "/chat/completions"
        last = ""
        for attempt in range(self.max_http_retries + 1):
            try:
                return await self._post_once(url, body)
            except TransientError as e:
                last = str(e)
                if attempt == self.max_http_retries:
                    break
                await asyncio.sleep(backoff_s(attempt, self.backoff_base, e.retry_after))
        if last.startswith("cannot connect"):
            raise BackendError(
                f"cannot reach {self.base_url} ({last}); is the server running? check --base-url"
            )
        raise BackendError(
            f"{self.ref}: gave up after {self.max_http_retries + 1} tries ({last}); "
            "try again later or lower --concurrency/--rpm"
        )

    async def _post_once(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        session = self._get_session()
        try:
            async with session.post(url, json=body) as resp:
                status = resp.status
                raw = await resp.read()
                headers = resp.headers
        except TimeoutError:
            self._count("timeout")
            raise TransientError(f"no answer within {self.timeout:g} s") from None
        except aiohttp.ClientConnectorError as e:
            self._count("connect")
            raise TransientError(f"cannot connect: {e.os_error or e}") from None
        except aiohttp.ClientError as e:
            self._count("connection")
            raise TransientError(f"connection error: {e}") from None
        if status in RETRYABLE_STATUS:
            self._count(str(status))
            raise TransientError(f"HTTP {status}", retry_after_s(headers))
        if status >= 400:
            raise BackendError(self._client_error(status, raw))
        try:
            data = json.loads(raw)
            data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            self._count("malformed")
            raise TransientError("malformed response body") from None
        return data

    def _client_error(self, status: int, raw: bytes) -> str:
        try:
            msg = json.loads(raw)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = raw[:200].decode("utf-8", "replace")
        msg = " ".join(str(msg).split())
        if status == 401:
            return f"{self.base_url}: 401 unauthorized ({msg}); check OPENAI_API_KEY"
        if status == 404:
            return f"{self.ref}: 404 ({msg}); check the model name and --base-url"
        return f"{self.ref}: HTTP {status} ({msg})"

    # -- the call -------------------------------------------------------------------------
    def request_body(self, messages: list[dict[str, Any]], call: Call) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.ref.name,
            "messages": messages,
            "temperature": call.temperature,
        }
        if call.max_tokens:
            body["max_tokens"] = call.max_tokens
        if call.seed is not None:
            body["seed"] = call.seed
        model = call.response_model
        if model is None:
            return body
        if self.mode is Mode.TOOLS:
            tool = tool_of(model)
            body["tools"] = [tool]
            body["tool_choice"] = {
                "type": "function",
                "function": {"name": tool["function"]["name"]},
            }
        elif self.mode is Mode.JSON_SCHEMA:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": model.__name__, "schema": schema_of(model)},
            }
        else:
            body["response_format"] = {"type": "json_object"}
            hint = {
                "role": "system",
                "content": "Answer with one JSON object matching this schema: "
                + json.dumps(schema_of(model)),
            }
            body["messages"] = [hint, *messages]
        return body

    def text_of(self, data: dict[str, Any], typed: bool) -> str:
        msg = data["choices"][0]["message"]
        if typed and self.mode is Mode.TOOLS and msg.get("tool_calls"):
            return str(msg["tool_calls"][0]["function"].get("arguments") or "")
        return str(msg.get("content") or "")

    async def complete(self, messages: list[dict[str, Any]], call: Call) -> tuple[str, Usage]:
        body = self.request_body(messages, call)
        await self.limits.acquire(estimate_tokens(body["messages"], call.max_tokens))
        t0 = time.perf_counter()
        data = await self._post(body)
        usage = usage_of(data)
        usage.latency_s = time.perf_counter() - t0
        return self.text_of(data, call.response_model is not None), usage
