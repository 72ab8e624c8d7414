"""--max-budget as a hard cap: a call is sent only if everything spent plus every call in
flight at its worst case (the whole prompt and max_tokens, at the teacher's price) stays
within it."""

from __future__ import annotations

from typing import Any

from distill.models import Price, call_cost


class OutOfBudget(Exception):
    """The next call could cross the cap; what is left waits for a bigger budget."""


class Budget:
    def __init__(self, limit: float | None, spent: float, price: Price | None) -> None:
        self.limit = limit
        self.spent = spent
        self.in_flight = 0.0
        self.price = price

    def reserve(self, messages: list[dict[str, Any]], max_tokens: int) -> float:
        """Hold a call's worst case (3 characters a prompt token, on the safe side); raises
        OutOfBudget when it does not fit."""
        prompt = sum(len(str(m.get("content") or "")) for m in messages) // 3
        worst = call_cost(self.price, prompt, max_tokens)
        if self.limit is not None and self.spent + self.in_flight + worst > self.limit:
            raise OutOfBudget
        self.in_flight += worst
        return worst

    def settle(self, held: float, cost: float) -> None:
        """A call is over: release what it held, count what it cost."""
        self.in_flight -= held
        self.spent += cost
