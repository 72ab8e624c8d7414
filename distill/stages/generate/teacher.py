"""The teacher as generate calls it: every attempt through calls.sqlite, within the budget,
counted, and re-asked by the one loop (distill.backends.reask) with generate's hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from distill.backends.base import Backend, Reply, Usage, cached_chat
from distill.backends.reask import Reask, reask_loop, reask_text
from distill.calls import CallLog
from distill.rubric import RubricJudge, judge_messages
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
        rubric: RubricJudge | None = None,
    ) -> None:
        self.backend = backend
        self.calls = calls
        self.budget = budget
        self.progress = progress
        self.temperature = temperature
        self.rubric = rubric  # judges the spec's rubric rules on every reply written

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

        hooks = Reask(reasks, wording, check, before, after, history, self._judge)
        return await reask_loop(attempt, messages, hooks)

    async def _judge(self, value: Any) -> str | None:
        """The rubric rules on each reply in `value` (a chat or one reply; a customer's
        message has none), one judge call per reply, counted and within the budget."""
        if self.rubric is None:
            return None
        for i, (user, reply) in enumerate(replies_in(value), 1):
            messages = judge_messages(self.rubric.spec, reply, user)
            held = self.budget.reserve(messages, 120 + 60 * len(self.rubric.spec.rubrics))
            judged = None
            try:
                judged = await self.rubric.judge(reply, user)
            finally:
                cost = judged.usage.cost_usd if judged and not judged.cached else 0.0
                self.budget.settle(held, cost)
            self.progress.count(judged.usage, judged.cached)
            if judged.problems:
                return f"exchange {i} reply: " + "; ".join(judged.problems)
        return None


def replies_in(value: Any) -> list[tuple[str, str]]:
    """(customer message, reply) pairs in a typed teacher output."""
    if hasattr(value, "exchanges"):
        return [(e.user, e.assistant) for e in value.exchanges]
    if hasattr(value, "reply"):
        return [("", value.reply)]
    return []
