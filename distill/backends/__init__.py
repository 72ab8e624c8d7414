"""Teacher, student and judge backends behind one interface (chat.py).

`get_backend("openai:gpt-4o")`, `get_backend("ollama:llama3.1:8b")`,
`get_backend("local:smollm2-135m")`, `get_backend("anthropic:claude-sonnet-4-5")`,
`get_backend("google:gemini-2.5-flash")`, `get_backend("fake:x")`. Heavy imports happen only for
the provider asked for.
"""

from __future__ import annotations

from typing import Any

from distill.backends.base import (
    Backend,
    FakeBackend,
    InvalidOutput,
    Reply,
    Usage,
    cached_chat,
)
from distill.models import Price, parse_model

__all__ = [
    "Backend",
    "FakeBackend",
    "InvalidOutput",
    "Reply",
    "Usage",
    "cached_chat",
    "close_backend",
    "get_backend",
]


def get_backend(
    model: str,
    *,
    base_url: str | None = None,
    timeout: float = 60.0,
    price: Price | None = None,
    **opts: Any,
) -> Backend:
    """A backend for a model string, priced at `price` when given (else the model table's
    list price). Options a provider does not use are ignored:
    openai: api_key, mode (tools|json_schema|json), rpm, tpm, max_http_retries, backoff_base;
    anthropic, google: api_key, rpm, tpm, max_http_retries, backoff_base;
    ollama: rpm, tpm; local: device, batch_size."""
    ref = parse_model(model)
    opts = {k: v for k, v in opts.items() if v is not None}
    if ref.provider == "fake":  # for tests and dry pipeline runs: answers "fake reply"
        return FakeBackend(
            opts.get("answers"),
            default=opts.get("default", _fake_reply),
            name=ref.name,
            price=price,
        )
    if ref.provider == "openai":
        from distill.backends.openai_backend import OpenAIBackend

        keep = {"api_key", "mode", "rpm", "tpm", "max_http_retries", "backoff_base"}
        return OpenAIBackend(
            ref.name,
            base_url=base_url,
            timeout=timeout,
            price=price,
            **{k: v for k, v in opts.items() if k in keep},
        )
    if ref.provider in ("anthropic", "google"):  # through instructor (instructor_backend.py)
        from distill.backends.instructor_backend import provider_backend

        keep = {"api_key", "rpm", "tpm", "max_http_retries", "backoff_base"}
        return provider_backend(
            ref.provider,
            ref.name,
            base_url=base_url,
            timeout=timeout,
            price=price,
            **{k: v for k, v in opts.items() if k in keep},
        )
    if ref.provider == "ollama":
        from distill.backends.ollama_backend import OllamaBackend

        keep = {"rpm", "tpm", "max_http_retries", "backoff_base"}
        return OllamaBackend(
            ref.name,
            base_url=base_url,
            timeout=timeout,
            price=price,
            **{k: v for k, v in opts.items() if k in keep},
        )
    from distill.backends.local import LocalBackend

    keep = {"device", "batch_size", "batch_wait_s", "default_max_tokens"}
    return LocalBackend(ref.name, price=price, **{k: v for k, v in opts.items() if k in keep})


def _fake_reply(messages: list[dict[str, Any]]) -> str:
    return "fake reply"


async def close_backend(backend: Any) -> None:
    """Release a backend's connections or worker (safe on any backend)."""
    close = getattr(backend, "aclose", None)
    if close is not None:
        await close()
