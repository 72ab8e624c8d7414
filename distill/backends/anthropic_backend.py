"""`anthropic:MODEL`: Claude through the Messages API, typed by instructor's TOOLS mode (a
forced tool call whose input is the object). Key from ANTHROPIC_API_KEY; `--base-url` or
ANTHROPIC_BASE_URL for a proxy or a compatible server.

The anthropic SDK 2.x no longer takes a temperature or a seed, so none is sent: Claude
samples as its API decides."""

from __future__ import annotations

import os
from typing import Any

from distill.backends.chat import Call
from distill.backends.instructor_backend import (
    InstructorBackend,
    Output,
    Transient,
    as_json,
    one_line,
    status_transient,
)


class AnthropicBackend(InstructorBackend):
    provider = "anthropic"
    key_env = ("ANTHROPIC_API_KEY",)
    extra = "anthropic"
    modules = ("anthropic",)

    def env_base_url(self) -> str | None:
        return os.environ.get("ANTHROPIC_BASE_URL") or None

    def make_client(self) -> tuple[Any, Any]:
        import anthropic
        import instructor

        client = anthropic.AsyncAnthropic(
            api_key=self._key or "none",  # a server at --base-url may need no key
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=0,  # retried in InstructorBackend.attempt, Retry-After honoured
        )
        return client, instructor.from_anthropic(client, mode=instructor.Mode.TOOLS)

    async def close_client(self, client: Any) -> None:
        await client.close()

    def options(self, call: Call) -> dict[str, Any]:
        return {"max_tokens": call.max_tokens or self.default_max_tokens}

    def output(self, completion: Any) -> Output:
        blocks = list(getattr(completion, "content", None) or [])
        tools = [b.input for b in blocks if getattr(b, "type", None) == "tool_use"]
        text = "".join(b.text for b in blocks if getattr(b, "type", None) == "text")
        usage = getattr(completion, "usage", None)
        return Output(
            arguments=as_json(tools[0]) if tools else None,
            text=text,
            prompt_tokens=int(getattr(usage, "input_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "output_tokens", 0) or 0),
            cut=getattr(completion, "stop_reason", None) == "max_tokens",
        )

    def transient(self, error: BaseException) -> Transient | None:
        import anthropic

        if isinstance(error, anthropic.APITimeoutError):
            return Transient("timeout")
        if isinstance(error, anthropic.APIConnectionError):
            return Transient("connect")
        if isinstance(error, anthropic.APIStatusError):
            return status_transient(error.status_code, error.response.headers)
        return None

    def client_error(self, error: BaseException) -> str:
        import anthropic

        if not isinstance(error, anthropic.APIStatusError):
            return f"{self.ref}: {type(error).__name__}: {one_line(error)}"
        status, msg = error.status_code, _message(error)
        if status in (401, 403):
            return f"{self.ref}: HTTP {status} ({msg}); check ANTHROPIC_API_KEY"
        if status == 404:
            return f"{self.ref}: 404 ({msg}); check the model name and --base-url"
        return f"{self.ref}: HTTP {status} ({msg})"


def _message(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and inner.get("message"):
            return one_line(inner["message"])
    return one_line(getattr(error, "message", error))
