"""The words generate sends: prompt files (distill/prompts/*.txt) filled in for a plan point."""

from __future__ import annotations

import string
from functools import cache
from importlib import resources
from typing import Any

from distill.runs import sha256_text
from distill.stages.generate.plan import PlanPoint
from distill.stages.generate.seeds import Seed, pick_examples, shared_examples
from distill.style import StyleSpec

PROMPT_NAMES = ("teacher_system", "generate", "reask", "axes", "customer", "reask_reply")


@cache
def prompt_text(name: str) -> str:
    return resources.files("distill").joinpath(f"prompts/{name}.txt").read_text(encoding="utf-8")


def prompt_hashes() -> dict[str, str]:
    return {name: sha256_text(prompt_text(name)) for name in PROMPT_NAMES}


def render(name: str, **values: Any) -> str:
    return (
        string.Template(prompt_text(name))
        .safe_substitute({k: str(v) for k, v in values.items()})
        .strip()
    )


def chat_reask(error: str) -> str:
    """What a whole chat that broke the style is sent back with."""
    return render("reask", error=error)


def reply_reask(error: str) -> str:
    """What a role-play reply that broke the style is sent back with."""
    return render("reask_reply", error=error)


def format_examples(examples: list[Seed]) -> str:
    return "\n".join(s.shown for s in examples)


def about(spec: StyleSpec) -> str:
    return " ".join(spec.description.split()) or "(not given)"


def teacher_system() -> dict[str, str]:
    return {"role": "system", "content": prompt_text("teacher_system").strip()}


def chat_request(spec: StyleSpec, point: PlanPoint, examples: list[Seed]) -> list[dict[str, Any]]:
    """The request for one whole chat at `point`, showing `examples`."""
    user = render(
        "generate",
        system_prompt=spec.system_prompt,
        description=about(spec),
        scope=spec.scope.description or "(anything)",
        min_words=spec.reply.min_words,
        max_words=spec.reply.max_words,
        max_sentences=spec.reply.max_sentences,
        rules="\n".join(f"- {r.name}: {r.why or r.name}" for r in spec.rules),
        examples=format_examples(examples),
        topic=point.topic,
        persona=point.persona,
        intent=point.intent,
        turns=point.turns,
    )
    return [teacher_system(), {"role": "user", "content": user}]


def build_messages(
    spec: StyleSpec, seeds: list[Seed], point: PlanPoint, k: int, shared: bool = False
) -> tuple[list[dict[str, Any]], list[Seed]]:
    """The request for a whole chat at `point` and the `k` seeds it shows. `shared`: the same
    seeds in every request, so everything before the plan point (the teacher's instructions,
    the style spec, the seeds) is byte-identical from one request to the next and the
    provider's prompt cache can serve it; otherwise the seed closest to the topic comes
    first (small local teachers drift to the example's topic without it)."""
    examples = shared_examples(seeds, k) if shared else pick_examples(seeds, point, k)
    return chat_request(spec, point, examples), examples


def customer_request(
    spec: StyleSpec, point: PlanPoint, history: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """The request for the customer's next message (role-play), after `history`."""
    so_far = "\n".join(f"{m['role']}: {m['content']}" for m in history)
    ask = render(
        "customer",
        description=about(spec),
        persona=point.persona,
        intent=point.intent,
        topic=point.topic,
        history=f"The chat so far:\n{so_far}\n" if history else "",
    )
    return [{"role": "user", "content": ask}]


def axes_request(spec: StyleSpec, seeds: list[Seed]) -> list[dict[str, Any]]:
    """The request for diversity axes, when the spec has none."""
    user = render(
        "axes",
        system_prompt=spec.system_prompt,
        description=about(spec),
        examples=format_examples(seeds[:8]),
    )
    return [teacher_system(), {"role": "user", "content": user}]
