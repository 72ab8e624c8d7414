"""Model strings (`openai:gpt-4o`, `gpt-4o-mini`, `ollama:llama3.1:8b`, `local:smollm2-135m`,
`anthropic:claude-sonnet-4-5`, `google:gemini-2.5-flash`)
and the model facts table (aliases, fine-tuning context limits, prices)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from distill.errors import UsageError

PROVIDERS = ("openai", "ollama", "local", "anthropic", "google", "fake")
DEFAULT_TEACHER = "local:smollm2-135m"  # offline, nothing to configure
HOSTED_TEACHER = "gpt-4o-mini"  # when OPENAI_API_KEY is set and no teacher is named
DEFAULT_STUDENT = "local:smollm2-135m"
DEFAULT_FINE_TUNE_CONTEXT = 16385  # the cookbook's check, for models the table does not know
# How many conversations to generate when none is asked for: the embedded teacher writes one
# in ~10 s on 2 cores, so EMBEDDED_N keeps a run with no flags within minutes.
EMBEDDED_N = 24
HOSTED_N = 300


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


@dataclass(frozen=True)
class Price:
    """What a model charges, in USD per million tokens."""

    input_per_1m: float
    output_per_1m: float
    cached_input_per_1m: float | None = None  # a prompt-cache hit; None: billed as input


FREE = Price(0.0, 0.0)


def price_of(ref: ModelRef) -> Price | None:
    """The list price of a model: free when it runs here (local, ollama, fake), the model
    table's for hosted models (a dated or fine-tuned name takes its base's, the longest base
    that prefixes it), None when unknown (a model on an OpenAI-compatible server: give one with
    --price-in/--price-out)."""
    if ref.provider in ("local", "ollama", "fake"):
        return FREE
    name, t = ref.name, model_table()
    facts = t["inference"].get(name)
    if facts is None and ref.provider == "openai":
        facts = fine_tune_facts(name)
        if facts is None and name.startswith("ft:"):
            facts = fine_tune_facts(name.split(":")[1])
    if facts is None:
        bases = [base for base in t["inference"] if name.startswith(base + "-")]
        facts = t["inference"][max(bases, key=len)] if bases else None
    if not facts:
        return None
    return Price(facts["input_per_1m"], facts["output_per_1m"], facts.get("cached_input_per_1m"))


def batch_price(price: Price | None) -> Price | None:
    """What the same model costs through OpenAI's Batch API: every rate at the table's
    [batch] price_share (half) of `price`."""
    if price is None:
        return None
    share = float(model_table()["batch"]["price_share"])
    cached = price.cached_input_per_1m
    return Price(
        price.input_per_1m * share,
        price.output_per_1m * share,
        None if cached is None else cached * share,
    )


def call_cost(
    price: Price | None,
    prompt_tokens: float,
    completion_tokens: float,
    cached_tokens: float = 0,
) -> float:
    """What a call costs in USD: every price in distill (spent, worst case, estimate) is this.
    `cached_tokens` of the prompt came from the provider's prompt cache and are billed at its
    cached rate. An unknown price counts as 0."""
    if price is None:
        return 0.0
    cached = min(cached_tokens, prompt_tokens) if price.cached_input_per_1m is not None else 0
    return (
        (prompt_tokens - cached) * price.input_per_1m
        + cached * (price.cached_input_per_1m or 0.0)
        + completion_tokens * price.output_per_1m
    ) / 1e6
