"""Model strings (`openai:gpt-4o`, `gpt-4o-mini`, `ollama:llama3.1:8b`, `local:smollm2-135m`)
and the model facts table (aliases, fine-tuning context limits, prices)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from distill.errors import UsageError

PROVIDERS = ("openai", "ollama", "local", "fake")
DEFAULT_TEACHER = "local:smollm2-135m"
DEFAULT_STUDENT = "local:smollm2-135m"
DEFAULT_FINE_TUNE_CONTEXT = 16385  # the cookbook's check, for models the table does not know


@dataclass(frozen=True)
class ModelRef:
    provider: str
    name: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.name}"


def parse_model(spec: str) -> ModelRef:
    """`gpt-4o` -> openai:gpt-4o; `ollama:llama3.1:8b` keeps the tag; unknown provider -> UsageError."""
    spec = spec.strip()
    if not spec:
        raise UsageError(
            "empty model name; use e.g. gpt-4o-mini, ollama:llama3.1:8b or local:smollm2-135m"
        )
    head, sep, rest = spec.partition(":")
    if sep and head in PROVIDERS:
        if not rest:
            raise UsageError(f"model {spec!r} names a provider but no model, e.g. {head}:NAME")
        return ModelRef(head, rest)
    if (
        sep
        and "/" not in head
        and head not in PROVIDERS
        and not head.startswith(("gpt", "ft", "o1", "o3", "o4"))
    ):
        raise UsageError(
            f"unknown provider {head!r} in model {spec!r}; use one of "
            + ", ".join(f"{p}:" for p in PROVIDERS if p != "fake")
            + " (a bare name means openai:)"
        )
    return ModelRef("openai", spec)


@cache
def model_table() -> dict[str, Any]:
    text = resources.files("distill").joinpath("data/models.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def resolve_fine_tune_model(name: str) -> str:
    """`gpt-4o-mini` -> `gpt-4o-mini-2024-07-18`; unknown names pass through unchanged."""
    table = model_table()["fine_tune"]
    if name in table:
        return name
    for full, facts in table.items():
        if name in facts.get("aliases", []):
            return full
    return name


def fine_tune_facts(name: str) -> dict[str, Any] | None:
    return model_table()["fine_tune"].get(resolve_fine_tune_model(name))


def fine_tune_context(name: str) -> int:
    facts = fine_tune_facts(name)
    return int(facts["context"]) if facts else DEFAULT_FINE_TUNE_CONTEXT


def inference_price(name: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens, or None when unknown (local models are free)."""
    t = model_table()
    if name in t["inference"]:
        f = t["inference"][name]
        return f["input_per_1m"], f["output_per_1m"]
    ft = fine_tune_facts(name)
    if ft is None and name.startswith("ft:"):
        ft = fine_tune_facts(name.split(":")[1])
    if ft:
        return ft["input_per_1m"], ft["output_per_1m"]
    for base, f in t["inference"].items():
        if name.startswith(base + "-"):
            return f["input_per_1m"], f["output_per_1m"]
    return None


def call_cost(name: str, prompt_tokens: int, completion_tokens: int) -> float:
    price = inference_price(name)
    if price is None:
        return 0.0
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000
