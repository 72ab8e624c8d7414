"""`google:MODEL`: Gemini through generateContent (google-genai), typed by instructor's TOOLS
mode (a forced function call whose arguments are the object). Key from GOOGLE_API_KEY or
GEMINI_API_KEY (the SDK's order); `--base-url` or GOOGLE_GEMINI_BASE_URL for a proxy or a
compatible server.

Gemini's function schemas keep types and required fields but not every constraint (lengths,
patterns, item counts): the pydantic model checks those, and the re-ask sends the reason back."""

from __future__ import annotations

import asyncio
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


class GoogleBackend(InstructorBackend):
    provider = "google"
    key_env = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
    extra = "google"
    modules = ("google.genai", "jsonref")

    def env_base_url(self) -> str | None:
        return os.environ.get("GOOGLE_GEMINI_BASE_URL") or None

    def wire_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Gemini calls the assistant `model`."""
        return [{**m, "role": "model"} if m["role"] == "assistant" else m for m in messages]

    def make_client(self) -> tuple[Any, Any]:
        import instructor
        from google import genai
        from google.genai import types

        http = types.HttpOptions(
            base_url=self.base_url,
            timeout=int(self.timeout * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),  # retried in attempt()
        )
        client = genai.Client(api_key=self._key, http_options=http)
        return client, instructor.from_genai(client, instructor.Mode.TOOLS, use_async=True)

    async def close_client(self, client: Any) -> None:
        await client.aio.aclose()

    def options(self, call: Call) -> dict[str, Any]:
        config: dict[str, Any] = {
            "temperature": call.temperature,
            "max_tokens": call.max_tokens or self.default_max_tokens,
        }
        if call.seed is not None:
            config["seed"] = call.seed
        if call.response_model is not None:  # instructor moves these into the request
            return {"generation_config": config}
        untyped = {"temperature": call.temperature, "max_output_tokens": config["max_tokens"]}
        if call.seed is not None:
            untyped["seed"] = call.seed
        return {"config": untyped}

    def output(self, completion: Any) -> Output:
        candidates = getattr(completion, "candidates", None) or []
        parts = []
        if candidates and candidates[0].content is not None:
            parts = [
                p for p in candidates[0].content.parts or [] if not getattr(p, "thought", None)
            ]
        calls = [p.function_call.args for p in parts if p.function_call is not None]
        text = "".join(p.text for p in parts if p.text)
        usage = getattr(completion, "usage_metadata", None)
        finish = str(getattr(candidates[0], "finish_reason", "") if candidates else "")
        return Output(
            arguments=as_json(calls[0]) if calls else None,
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_token_count", 0) or 0),
            # thinking tokens are billed as output
            completion_tokens=int(getattr(usage, "candidates_token_count", 0) or 0)
            + int(getattr(usage, "thoughts_token_count", 0) or 0),
            cut=finish.endswith("MAX_TOKENS"),
        )

    def transient(self, error: BaseException) -> Transient | None:
        import aiohttp
        import httpx
        from google.genai import errors

        if isinstance(error, errors.APIError):
            return status_transient(error.code, getattr(error.response, "headers", None))
        if isinstance(error, (TimeoutError, asyncio.TimeoutError, httpx.TimeoutException)):
            return Transient("timeout")
        if isinstance(error, (aiohttp.ClientError, httpx.TransportError, ConnectionError)):
            return Transient("connect")
        return None

    def client_error(self, error: BaseException) -> str:
        from google.genai import errors

        if not isinstance(error, errors.APIError):
            return f"{self.ref}: {type(error).__name__}: {one_line(error)}"
        status, msg = error.code, one_line(error.message or error.status or "")
        if status in (401, 403) or (status == 400 and "key" in msg.lower()):
            return f"{self.ref}: HTTP {status} ({msg}); check GOOGLE_API_KEY / GEMINI_API_KEY"
        if status == 404:
            return f"{self.ref}: 404 ({msg}); check the model name and --base-url"
        return f"{self.ref}: HTTP {status} ({msg})"
