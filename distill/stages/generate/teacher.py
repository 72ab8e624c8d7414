"""The teacher as generate calls it: every attempt through calls.sqlite, within the budget,
counted, and re-asked by the one loop (distill.backends.reask) with generate's hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from distill.backends.base import Backend, Reply, Usage, cached_chat
from distill.backends.reask import Reask, reask_loop, reask_text
from distill.calls import CallLog
from distill.stages.generate.budget import Budget
from distill.stages.generate.progress import Progress

STAGE = "generate"  # what calls.sqlite and rejected.jsonl file generate's rows under


class Teacher:
    def __init__(
        self,
        backend: Backend,
        calls: CallLog,
        budget: Budget,
        progress: Progress,
        temperature: float,
    ) -> None:
        self.backend = backend
        self.calls = calls
        self.budget = budget
        self.progress = progress
        self.temperature = temperature

    async def ask(
        self,
        messages: list[dict[str, Any]],
        model: type[BaseModel],
        *,
        max_tokens: int,
        seed: int,
        reasks: int = 0,
        wording: Callable[[str], str] = reask_text,
        check: Callable[[Any], str | None] | None = None,
        history: bool = True,
    ) -> Reply:
        """A `model` for `messages`, re-asked `reasks` times; InvalidOutput when it never
        passes, OutOfBudget when the next attempt might cross --max-budget."""

        async def attempt(convo: list[dict[str, Any]]) -> Reply:
            return await cached_chat(
                self.backend,
                self.calls,
                STAGE,
                convo,
                response_model=model,
                max_retries=0,
                temperature=self.temperature,
                max_tokens=max_tokens,
                seed=seed,
            )

        def before(n: int, convo: list[dict[str, Any]]) -> float:
            held = self.budget.reserve(convo, max_tokens)
            self.progress.reasks += n > 0
            return held

        def after(held: float, usage: Usage | None, cached: bool) -> None:
            paid = usage is not None and not cached
            self.budget.settle(held, usage.cost_usd if usage and paid else 0.0)
            if usage is not None:
                self.progress.count(usage, cached)

        hooks = Reask(reasks, wording, check, before, after, history)
        return await reask_loop(attempt, messages, hooks)
