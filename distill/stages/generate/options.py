"""Every knob of `distill generate`: a field's default and help are the flag's, distill.toml's
[generate] key's and the manifest's copy's (distill.knobs)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.errors import InputError, UsageError
from distill.knobs import knob
from distill.models import (
    DEFAULT_TEACHER,
    EMBEDDED_N,
    HOSTED_N,
    HOSTED_TEACHER,
    Price,
    parse_model,
)

if TYPE_CHECKING:
    from distill.style import StyleSpec

PLAN_LIMIT = 3  # plan points per example asked for, at most: rejected ones are replaced


# rows an in-process teacher generates at once: 32 gave 3.4x the tokens per second of 8 on
# 2 CPU cores (65.8 vs 19.3 tok/s, SmolLM2-135M, same load); 64 was no faster
LOCAL_BATCH = 32


@dataclass
class GenerateOptions:
    seeds: Path = knob(help='Seed chats, one {"messages": [...]} per line.', record=False)
    style: Path | None = knob(
        None,
        "Style spec (default: <seeds name>.style.toml next to the seeds; without one, "
        "generate stops and points to `distill init --seeds FILE`, which drafts it).",
        record=False,
    )
    prompts: Path | None = knob(
        None,
        "Customer messages to answer (.txt, one per line, or chat .jsonl ending with the "
        "customer's turn, optional meta.topic): the teacher writes only the replies.",
        record=False,
    )
    n: int | None = knob(
        None,
        "Conversations to keep: a rejected one is replaced by the next point of the plan, "
        f"until n pass or {PLAN_LIMIT} x n points are planned (or --max-budget is reached). "
        f"Default {EMBEDDED_N} with the embedded teacher (minutes on a CPU), else {HOSTED_N}.",
    )
    teacher: str | None = knob(
        None,
        "openai:MODEL (or a bare gpt-* name), ollama:MODEL, anthropic:MODEL, google:MODEL, "
        "local:NAME|PATH (default: "
        f"{HOSTED_TEACHER} when OPENAI_API_KEY is set, else the embedded {DEFAULT_TEACHER}).",
    )
    base_url: str | None = knob(
        None,
        "The teacher's server: any OpenAI-compatible one (vLLM, LM Studio, ...), or a proxy "
        "for anthropic: or google:.",
    )
    judge: str | None = knob(
        None,
        "Model that judges the style spec's rubric rules (sentences, not regexes); a failed "
        "one is re-asked like a failed regex (default: the teacher, unless it is a local "
        "model; 'none' skips them, and says so).",
    )
    name: str | None = knob(
        None, "Run name under outputs/ (default: the seeds' stem).", record=False
    )
    seed: int = knob(0, "Plan and sampling seed.")
    concurrency: int | None = knob(
        None, "Requests in flight (default 8; 32 for a local teacher, one batch on the CPU)."
    )
    rpm: float | None = knob(None, "Requests per minute limit.")
    tpm: float | None = knob(None, "Tokens per minute limit.")
    timeout: float = knob(60.0, "Seconds per request.")
    max_budget: float | None = knob(
        None, "Hard cap in USD, counting requests in flight at their worst case."
    )
    price_in: float | None = knob(
        None, "The teacher's USD per million prompt tokens, for a model the price table lacks."
    )
    price_out: float | None = knob(
        None, "The teacher's USD per million completion tokens (with --price-in)."
    )
    max_reasks: int = knob(2, "Re-asks when a reply breaks the style before it is rejected.")
    temperature: float = knob(0.8, "Teacher temperature.")
    examples: int | None = knob(
        None,
        "Seed chats shown per request (default 3; 1 for local teachers). Hosted teachers see "
        "the same ones in every request: a longer shared prefix, which OpenAI bills at its "
        "cached price once it reaches 1,024 tokens.",
    )
    topic_check: bool | None = knob(
        None, "Reject chats that drift off their planned topic (default: on for local teachers)."
    )
    roleplay: bool | None = knob(
        None,
        "One teacher call per turn, as customer then assistant (default: on for local "
        "teachers, which cannot write a whole chat).",
    )
    batch: bool = knob(
        False,
        "Send the requests through OpenAI's Batch API: half the price, answers within 24 h "
        "(openai: teachers only; Ctrl-C detaches, rerun to re-attach).",
    )
    outputs: Path | None = knob(None, flag=False, record=False)
    backend_opts: dict[str, Any] = knob(default_factory=dict, flag=False, record=False)

    def resolved(self) -> GenerateOptions:
        """The options with every 'default: depends' filled in."""
        teacher = self.teacher or default_teacher()
        local = parse_model(teacher).provider == "local"
        n = self.n if self.n is not None else (EMBEDDED_N if local else HOSTED_N)
        return replace(
            self,
            teacher=teacher,
            n=n,
            examples=self.examples if self.examples is not None else (1 if local else 3),
            topic_check=self.topic_check if self.topic_check is not None else local,
            roleplay=self.roleplay if self.roleplay is not None else local,
            # --batch: every point in the first batch (--concurrency caps a round)
            concurrency=self.concurrency or (n if self.batch else LOCAL_BATCH if local else 8),
        )

    def style_path(self) -> Path:
        if self.style is not None:
            return self.style
        stem = self.seeds.name.removesuffix(".jsonl")
        return self.seeds.with_name(f"{stem}.style.toml")

    def load_style(self) -> StyleSpec:
        """The style spec; with none beside the seeds, one line pointing to `distill init`."""
        from distill.style import StyleSpec

        path = self.style_path()
        default = replace(self, style=None).style_path()
        if path == default and not path.exists():  # also when `distill run` names the default
            raise InputError(
                f"{path}: no style spec for {self.seeds}; draft one from the seeds with "
                f"`distill init --seeds {self.seeds}`, edit it, then rerun (or pass --style PATH)"
            )
        return StyleSpec.load(path)

    def run_name(self) -> str:
        return self.name or self.seeds.name.removesuffix(".jsonl")

    def is_local(self) -> bool:
        return parse_model(self.teacher or default_teacher()).provider == "local"

    def price(self) -> Price | None:
        """The teacher's price from --price-in/--price-out, or None (the table's applies)."""
        if self.price_in is None or self.price_out is None:
            return None
        return Price(self.price_in, self.price_out)

    def validate(self) -> None:
        if self.n is not None and self.n < 1:
            raise UsageError("--n must be at least 1")
        if self.concurrency is not None and self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if self.max_reasks < 0:
            raise UsageError("--max-reasks must be 0 or more")
        if self.max_budget is not None and self.max_budget <= 0:
            raise UsageError("--max-budget must be a positive number of dollars")
        if (self.price_in is None) != (self.price_out is None):
            raise UsageError("give both --price-in and --price-out (USD per million tokens)")
        if min(self.price_in or 0, self.price_out or 0) < 0:
            raise UsageError("--price-in and --price-out must be 0 or more")
        if not self.seeds.exists():
            raise InputError(f"{self.seeds}: seeds file not found; pass --seeds PATH")
        ref = parse_model(self.teacher or default_teacher())
        if self.batch and ref.provider != "openai":
            raise UsageError(
                f"--batch uses OpenAI's Batch API and {ref} is not an openai: teacher; drop "
                "--batch or pass --teacher openai:MODEL"
            )


def default_teacher() -> str:
    """The OpenAI teacher when a key is set (from the environment only), else the embedded
    one, which needs nothing."""
    return HOSTED_TEACHER if os.environ.get("OPENAI_API_KEY") else DEFAULT_TEACHER
