"""The one re-ask loop (instructor's): a reply that fails validation is sent back with the
reason, a bounded number of times; what still fails raises InvalidOutput with the last reason.

Every backend's `chat` runs it over single completions; generate runs it over attempts that
go through calls.sqlite. What differs between them is a hook: checks the output type cannot
make, the wording of the re-ask, and work before and after each attempt (generate reserves
its budget before and settles it after).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from distill.backends.reply import InvalidOutput, Reply, Usage, first_error
from distill.backends.structured import adapter_of

Messages = list[dict[str, Any]]
Attempt = Callable[[Messages], Awaitable[Reply]]  # one call; InvalidOutput when it won't validate


def reask_text(error: str) -> str:
    return (
        f"That output was rejected: {error}. Reply again with the whole JSON object, "
        "corrected, and nothing else."
    )


@dataclass(frozen=True)
class Reask:
    """What a caller of the loop may change; the defaults are a plain backend's."""

    max_reasks: int = 2
    wording: Callable[[str], str] = reask_text  # the message that sends a reason back
    check: Callable[[Any], str | None] | None = None  # a problem the output type cannot see
    before: Callable[[int, Messages], Any] | None = None  # before attempt n (may raise to stop)
    after: Callable[[Any, Usage | None, bool], None] | None = None  # (what before gave,
    # the attempt's usage or None when it raised, whether it came from calls.sqlite)
    history: bool = True  # False: only the last failed output goes back (long outputs)
    judge: Callable[[Any], Awaitable[str | None]] | None = None  # a model's ruling (rubric
    # rules), asked only when everything else passes


async def reask_loop(attempt: Attempt, messages: Messages, hooks: Reask = Reask()) -> Reply:
    """`attempt(conversation)` until a reply passes validation and `hooks.check`; usage sums
    every attempt, and the reply counts as cached only when every attempt was."""
    usage = Usage(attempts=0)
    convo = list(messages)
    cached = True
    raw = error = ""
    for n in range(hooks.max_reasks + 1):
        held = hooks.before(n, convo) if hooks.before else None
        spent: Usage | None = None
        was_cached = False
        try:
            try:
                reply = await attempt(convo)
            except InvalidOutput as e:
                spent, was_cached, raw, error = e.usage, e.cached, e.raw, str(e)
            else:
                spent, was_cached, raw = reply.usage, reply.cached, reply.text
                error = (hooks.check(reply.value) if hooks.check else None) or ""
                if not error and hooks.judge:
                    error = await hooks.judge(reply.value) or ""
        finally:
            if hooks.after:
                hooks.after(held, spent, was_cached)
        assert spent is not None
        usage.add(spent)
        cached = cached and was_cached
        if not error:
            return Reply(reply.value, reply.text, usage, cached)
        convo = (convo if hooks.history else list(messages)) + [
            {"role": "assistant", "content": raw},
            {"role": "user", "content": hooks.wording(error)},
        ]
    raise InvalidOutput(error, raw=raw, usage=usage, cached=cached)


def validated(
    model: type[BaseModel] | None, text: str, usage: Usage, limit: int | None = None
) -> Reply:
    """`text` as a `model` (the text itself when untyped); InvalidOutput with the first error
    in one line otherwise, saying so when the output ran into the token `limit`."""
    if model is None:
        return Reply(text, text, usage)
    try:
        value = adapter_of(model).validate_json(text)
    except ValidationError as e:
        error = first_error(e)
        if limit and usage.completion_tokens >= limit:
            error += f" (the output was cut at {limit} tokens; keep it shorter)"
        raise InvalidOutput(error, raw=text, usage=usage) from None
    return Reply(value, text, usage)
