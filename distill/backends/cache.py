"""Calls through calls.sqlite: a finished call is never sent (or paid for) twice."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from distill.backends.chat import Backend
from distill.backends.reply import InvalidOutput, Reply, Usage
from distill.backends.structured import schema_of
from distill.calls import CallLog, CallRecord, request_key


async def cached_chat(
    backend: Backend,
    calls: CallLog,
    stage: str,
    messages: list[dict[str, Any]],
    *,
    response_model: type[BaseModel] | None = None,
    **opts: Any,
) -> Reply:
    """`backend.chat` through calls.sqlite. The key covers the model, messages, options and
    output type, so a changed prompt is a new call. Failed calls (InvalidOutput) are recorded
    with their error and replayed too, so a resume does not pay again for an answer that
    already failed every re-ask. A replay is marked `cached`, a reply or an error alike."""
    request = {
        "messages": messages,
        "response_model": response_model.__name__ if response_model else None,
        "schema": schema_of(response_model) if response_model else None,
        **opts,
    }
    model = str(backend.ref)
    key = request_key(backend.identity(), request)
    hit = calls.get(key)
    if hit is not None:
        resp = hit.response
        usage = Usage(
            hit.prompt_tokens,
            hit.completion_tokens,
            hit.latency_s,
            hit.attempts,
            hit.cost_usd,
            hit.cached_tokens,
        )
        if hit.error:
            raise InvalidOutput(hit.error, raw=resp.get("text", ""), usage=usage, cached=True)
        value = response_model.model_validate(resp["value"]) if response_model else resp["text"]
        return Reply(value=value, text=resp["text"], usage=usage, cached=True)
    try:
        reply = await backend.chat(messages, response_model=response_model, **opts)
    except InvalidOutput as e:
        calls.put(_record(key, stage, model, request, {"text": e.raw}, e.usage, error=str(e)))
        raise
    value = (
        reply.value.model_dump(mode="json") if isinstance(reply.value, BaseModel) else reply.value
    )
    calls.put(
        _record(key, stage, model, request, {"text": reply.text, "value": value}, reply.usage)
    )
    return reply


def _record(
    key: str,
    stage: str,
    model: str,
    request: Any,
    response: Any,
    u: Usage,
    error: str | None = None,
) -> CallRecord:
    return CallRecord(
        key=key,
        stage=stage,
        model=model,
        request=request,
        response=response,
        error=error,
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cost_usd=u.cost_usd,
        latency_s=u.latency_s,
        attempts=u.attempts,
        cached_tokens=u.cached_tokens,
    )
