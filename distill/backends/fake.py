"""A backend with queued answers and a request history, for tests and dry pipeline runs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from distill.backends.chat import Backend, Call
from distill.backends.reply import Usage
from distill.models import ModelRef, Price

Answer = str | dict[str, Any] | BaseModel | Exception | Callable[[list[dict[str, Any]]], Any]


class FakeBackend(Backend):
    """Each completion pops the next answer (or calls `default(messages)` when the queue is
    empty). An answer may be text, a dict or model (sent as JSON), an Exception to raise, or a
    callable taking the messages. Validation and re-asks are the real loop's; tokens are
    counted as words, priced at `price` (free unless given)."""

    def __init__(
        self,
        answers: list[Answer] | None = None,
        default: Callable[[list[dict[str, Any]]], Any] | None = None,
        name: str = "fake",
        price: Price | None = None,
    ) -> None:
        super().__init__(ModelRef("fake", name), price)
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

    async def complete(self, messages: list[dict[str, Any]], call: Call) -> tuple[str, Usage]:
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        a = self._next(messages)
        if isinstance(a, BaseModel):
            a = a.model_dump()
        text = a if isinstance(a, str) else json.dumps(a)
        usage = Usage(
            prompt_tokens=sum(len(str(m.get("content", "")).split()) for m in messages),
            completion_tokens=len(text.split()),
            latency_s=time.perf_counter() - t0,
        )
        return text, usage
