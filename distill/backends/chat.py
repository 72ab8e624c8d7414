"""The one interface every teacher, student and judge sits behind.

A backend makes single completions (`complete`); `chat` turns them into a reply, typed when a
response_model is given, through the one re-ask loop (reask.py), and prices every attempt with
the backend's `price` (the model table's list price unless one is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from distill.backends.reask import Reask, reask_loop, validated
from distill.backends.reply import Reply, Usage
from distill.models import ModelRef, Price, call_cost, price_of


@dataclass(frozen=True)
class Call:
    """What one call asks for besides the messages."""

    response_model: type[BaseModel] | None = None
    temperature: float = 0.7
    max_tokens: int | None = None
    seed: int | None = None


class Backend:
    """A model behind `chat`. Subclasses implement `complete`, one unvalidated completion."""

    default_max_tokens: int | None = None  # the completion limit when a call gives none

    def __init__(self, ref: ModelRef, price: Price | None = None) -> None:
        self.ref = ref
        self.price = price if price is not None else price_of(ref)  # None: unknown

    def identity(self) -> str:
        """What calls.sqlite keys this model's calls by: the model string, unless the same
        string can name different weights (a local folder retrained in place)."""
        return str(self.ref)

    async def complete(self, messages: list[dict[str, Any]], call: Call) -> tuple[str, Usage]:
        """The model's text for `messages` and what it took."""
        raise NotImplementedError

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
        """A reply to `messages`; a typed one that fails validation is re-asked `max_retries`
        times, then InvalidOutput."""
        call = Call(response_model, temperature, max_tokens, seed)

        async def attempt(convo: list[dict[str, Any]]) -> Reply:
            return await self.attempt(convo, call)

        return await reask_loop(attempt, messages, Reask(max_reasks=max_retries))

    async def attempt(self, messages: list[dict[str, Any]], call: Call) -> Reply:
        """One try: a completion validated here (backends that validate through instructor
        override this); InvalidOutput when it does not validate."""
        text, usage = await self.complete(messages, call)
        usage.cost_usd = call_cost(
            self.price, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
        )
        return validated(
            call.response_model, text, usage, call.max_tokens or self.default_max_tokens
        )
