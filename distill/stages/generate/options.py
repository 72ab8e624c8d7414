"""Every knob of `distill generate`: a field's default and help are the flag's, distill.toml's
[generate] key's and the manifest's copy's (distill.knobs)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distill.errors import InputError, UsageError
from distill.knobs import knob
from distill.models import DEFAULT_TEACHER, parse_model


@dataclass
class GenerateOptions:
    seeds: Path = knob(help='Seed chats, one {"messages": [...]} per line.', record=False)
    style: Path | None = knob(
        None, "Style spec (default: <seeds name>.style.toml next to the seeds).", record=False
    )
    prompts: Path | None = knob(
        None,
        "Customer messages to answer (.txt, one per line, or chat .jsonl ending with the "
        "customer's turn, optional meta.topic): the teacher writes only the replies.",
        record=False,
    )
    n: int = knob(300, "Conversations to plan.")
    teacher: str = knob(
        DEFAULT_TEACHER, "openai:MODEL (or a bare gpt-* name), ollama:MODEL, local:NAME|PATH."
    )
    base_url: str | None = knob(None, "Any OpenAI-compatible server (vLLM, LM Studio, ...).")
    name: str | None = knob(
        None, "Run name under outputs/ (default: the seeds' stem).", record=False
    )
    seed: int = knob(0, "Plan and sampling seed.")
    concurrency: int = knob(8, "Requests in flight.")
    rpm: float | None = knob(None, "Requests per minute limit.")
    tpm: float | None = knob(None, "Tokens per minute limit.")
    timeout: float = knob(60.0, "Seconds per request.")
    max_budget: float | None = knob(
        None, "Hard cap in USD, counting requests in flight at their worst case."
    )
    max_reasks: int = knob(2, "Re-asks when a reply breaks the style before it is rejected.")
    temperature: float = knob(0.8, "Teacher temperature.")
    examples: int | None = knob(
        None, "Seed chats shown per request (default 3; 1 for local teachers).", flag=False
    )
    topic_check: bool | None = knob(
        None, "Reject chats that drift off their planned topic (default: on for local teachers)."
    )
    roleplay: bool | None = knob(
        None,
        "One teacher call per turn, as customer then assistant (default: on for local "
        "teachers, which cannot write a whole chat).",
    )
    outputs: Path | None = knob(None, flag=False, record=False)
    backend_opts: dict[str, Any] = knob(default_factory=dict, flag=False, record=False)

    def resolved(self) -> GenerateOptions:
        """The options with every 'default: depends' filled in."""
        local = self.is_local()
        return replace(
            self,
            examples=self.examples if self.examples is not None else (1 if local else 3),
            topic_check=self.topic_check if self.topic_check is not None else local,
            roleplay=self.roleplay if self.roleplay is not None else local,
        )

    def style_path(self) -> Path:
        if self.style is not None:
            return self.style
        stem = self.seeds.name.removesuffix(".jsonl")
        return self.seeds.with_name(f"{stem}.style.toml")

    def run_name(self) -> str:
        return self.name or self.seeds.name.removesuffix(".jsonl")

    def is_local(self) -> bool:
        return parse_model(self.teacher).provider == "local"

    def validate(self) -> None:
        if self.n < 1:
            raise UsageError("--n must be at least 1")
        if self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if self.max_reasks < 0:
            raise UsageError("--max-reasks must be 0 or more")
        if self.max_budget is not None and self.max_budget <= 0:
            raise UsageError("--max-budget must be a positive number of dollars")
        if not self.seeds.exists():
            raise InputError(f"{self.seeds}: seeds file not found; pass --seeds PATH")
        parse_model(self.teacher)
