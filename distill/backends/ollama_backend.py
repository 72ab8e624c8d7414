"""`ollama:MODEL`: a model served by Ollama (OLLAMA_HOST, default http://127.0.0.1:11434).

Typed calls pass the output type's JSON schema as `format`, validate the reply and re-ask a
bounded number of times. The client's own timeout is none; ours is finite.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx

from distill.backends.chat import Backend, Call
from distill.backends.pacing import RETRYABLE_STATUS, Limits, backoff_s, estimate_tokens
from distill.backends.reply import Usage
from distill.backends.structured import schema_of
from distill.errors import BackendError
from distill.models import ModelRef, Price


class OllamaBackend(Backend):
    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        timeout: float = 120.0,
        rpm: float | None = None,
        tpm: float | None = None,
        max_http_retries: int = 4,
        backoff_base: float = 0.5,
        price: Price | None = None,
    ) -> None:
        super().__init__(ModelRef("ollama", name), price)
        self.host = base_url or os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"
        self.timeout = timeout
        self.limits = Limits(rpm, tpm)
        self.max_http_retries = max_http_retries
        self.backoff_base = backoff_base
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_client(self) -> Any:
        import ollama

        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = ollama.AsyncClient(host=self.host, timeout=self.timeout)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
        self._client = None

    async def _chat_once(self, **kwargs: Any) -> Any:
        import ollama

        last = ""
        for attempt in range(self.max_http_retries + 1):
            retry_after = None
            try:
                return await self._get_client().chat(**kwargs)
            except ollama.ResponseError as e:
                if e.status_code == 404:
                    raise BackendError(
                        f"{self.ref}: model not found on {self.host}; run `ollama pull "
                        f"{self.ref.name}`"
                    ) from None
                if e.status_code not in RETRYABLE_STATUS:
                    raise BackendError(f"{self.ref}: {e.error} (HTTP {e.status_code})") from None
                last = f"HTTP {e.status_code}"
            except ConnectionError:
                last = "cannot connect"
            except (TimeoutError, httpx.TimeoutException):
                last = f"no answer within {self.timeout:g} s"
            except (httpx.HTTPError, ValueError) as e:
                last = f"bad answer: {e}"
            if attempt < self.max_http_retries:
                await asyncio.sleep(backoff_s(attempt, self.backoff_base, retry_after))
        if last == "cannot connect":
            raise BackendError(
                f"cannot reach Ollama at {self.host}; start it with `ollama serve` or set "
                "OLLAMA_HOST"
            )
        raise BackendError(f"{self.ref}: gave up after {self.max_http_retries + 1} tries ({last})")

    async def complete(self, messages: list[dict[str, Any]], call: Call) -> tuple[str, Usage]:
        options: dict[str, Any] = {"temperature": call.temperature}
        if call.max_tokens:
            options["num_predict"] = call.max_tokens
        if call.seed is not None:
            options["seed"] = call.seed
        fmt = schema_of(call.response_model) if call.response_model is not None else None
        await self.limits.acquire(estimate_tokens(messages, call.max_tokens))
        t0 = time.perf_counter()
        resp = await self._chat_once(
            model=self.ref.name, messages=messages, format=fmt, options=options
        )
        usage = Usage(
            prompt_tokens=int(resp.prompt_eval_count or 0),
            completion_tokens=int(resp.eval_count or 0),
            latency_s=time.perf_counter() - t0,
        )
        return resp.message.content or "", usage
