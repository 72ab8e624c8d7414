"""One question to a model as eval asks it, greedy with seed 0 through calls.sqlite, a failure
kept as its message rather than raised: `distill pairs` asks through the same functions, so
its replies are the ones eval would get (and replay from the same cache)."""

from __future__ import annotations

from typing import Any

from distill.backends.base import Backend, cached_chat
from distill.calls import CallLog
from distill.errors import DistillError
from distill.evaluation.inputs import JUDGE_MAX_TOKENS, Verdict
from distill.evaluation.scoring import Answer


async def ask_reply(
    backend: Backend, calls: CallLog, stage: str, messages: list[dict[str, Any]], max_tokens: int
) -> Answer:
    """The model's reply, or the error that stopped it."""
    try:
        r = await cached_chat(
            backend, calls, stage, messages, temperature=0.0, max_tokens=max_tokens, seed=0
        )
        return Answer(text=r.text)
    except DistillError as e:
        return Answer(error=str(e))


async def ask_verdict(
    judge: Backend, calls: CallLog, stage: str, messages: list[dict[str, Any]]
) -> Verdict | str:
    """The judge's verdict on one comparison, or the error that stopped it."""
    try:
        r = await cached_chat(
            judge,
            calls,
            stage,
            messages,
            response_model=Verdict,
            temperature=0.0,
            max_tokens=JUDGE_MAX_TOKENS,
            seed=0,
        )
        return r.value
    except DistillError as e:
        return str(e)
