"""The dry run: the plan and what it would take in tokens and dollars, sending nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass

from distill.backends.structured import schema_of
from distill.models import Price, batch_price, call_cost, parse_model, price_of
from distill.stages.generate.axes import plan_axes
from distill.stages.generate.chats import ConversationTypes
from distill.stages.generate.options import GenerateOptions
from distill.stages.generate.plan import PlanPoint, make_plan
from distill.stages.generate.prompts import build_messages
from distill.stages.generate.seeds import load_seeds
from distill.stages.generate.whole_chat import max_tokens_for


@dataclass
class DryRun:
    plan: list[PlanPoint]
    prompt_tokens: int
    completion_tokens: int
    worst_completion_tokens: int
    price: Price | None
    axes_source: str
    prefix_tokens: int = 0  # the start every request shares (instructions, spec, seeds)
    cached_tokens: int = 0  # of the prompt tokens, those OpenAI's prompt cache would serve
    batch: bool = False  # priced at the Batch API's rates

    @property
    def cost_usd(self) -> float | None:
        if self.price is None:
            return None
        return call_cost(self.price, self.prompt_tokens, self.completion_tokens, self.cached_tokens)

    @property
    def worst_cost_usd(self) -> float | None:
        if self.price is None:
            return None
        return call_cost(self.price, self.prompt_tokens, self.worst_completion_tokens)


CACHE_MIN = 1024  # OpenAI caches a repeated prefix from 1,024 tokens on,
CACHE_STEP = 128  # in steps of 128 tokens


def cacheable(prefix_tokens: int) -> int:
    """How many tokens of a repeated `prefix_tokens`-token prefix OpenAI's cache serves."""
    if prefix_tokens < CACHE_MIN:
        return 0
    return CACHE_MIN + (prefix_tokens - CACHE_MIN) // CACHE_STEP * CACHE_STEP


def shared_prefix(texts: list[str]) -> str:
    """The text every one of `texts` starts with."""
    if not texts:
        return ""
    lo, hi = min(texts), max(texts)
    n = 0
    while n < min(len(lo), len(hi)) and lo[n] == hi[n]:
        n += 1
    return lo[:n]


def count_tokens(texts: list[str]) -> int:
    try:
        import quicktok

        enc = quicktok.get_encoding("o200k_base")
        return sum(len(enc.encode(t)) for t in texts)
    except Exception:  # pragma: no cover - quicktok is a dependency; fall back to 4 chars
        return sum(len(t) // 4 for t in texts)


def dry_run(opts: GenerateOptions) -> DryRun:
    """The plan and the estimated tokens and cost; sends nothing, writes nothing."""
    opts.validate()
    opts = opts.resolved()
    assert opts.n is not None and opts.teacher is not None
    spec = opts.load_style()
    seeds = load_seeds(opts.seeds)
    axes, source = plan_axes(spec, seeds, None, None)
    plan = make_plan(axes, opts.n, opts.seed)
    shown = opts.examples or 0
    shared = not opts.is_local()
    requests = [build_messages(spec, seeds, p, shown, shared)[0] for p in plan]
    prompts = [m["content"] for r in requests for m in r]
    prompt_tokens = count_tokens(prompts)
    prefix = count_tokens([shared_prefix(["\n".join(m["content"] for m in r) for r in requests])])
    if shared and plan:  # the output schema goes first in every request, and is billed
        types = ConversationTypes(spec)
        schemas = {
            t: count_tokens([json.dumps(schema_of(types.get(t)))]) for t in {p.turns for p in plan}
        }
        prompt_tokens += sum(schemas[p.turns] for p in plan)
        prefix += min(schemas.values())
    # each output type (one per number of turns) is its own cache line: its first request pays
    repeats = len(plan) - len({p.turns for p in plan})
    cached = cacheable(prefix) * max(0, repeats) if len(plan) > 1 else 0
    per_exchange = count_tokens(
        [json.dumps(p, ensure_ascii=False) for s in seeds for p in s.exchanges]
    ) / max(1, sum(len(s.exchanges) for s in seeds))
    completion = int(sum(per_exchange * p.turns + 8 for p in plan))
    worst = sum(max_tokens_for(p.turns) for p in plan)
    price = opts.price() or price_of(parse_model(opts.teacher))
    if opts.batch:
        price = batch_price(price)
    return DryRun(
        plan, prompt_tokens, completion, worst, price, source, prefix, cached, bool(opts.batch)
    )


def teacher_line(opts: GenerateOptions, d: DryRun) -> str:
    """One line on the teacher picked when none was named, and what it will cost (`d`)."""
    ref, n = parse_model(str(opts.resolved().teacher)), len(d.plan)
    if ref.provider == "local":
        return (
            f"Teacher: {ref}, the embedded model (no OPENAI_API_KEY set): offline and "
            f"free, but weak; {n} conversations take a few minutes on CPU. Pass --teacher (or "
            "set OPENAI_API_KEY) for data worth training on."
        )
    cost = f"about ${d.cost_usd:.4f}" if d.cost_usd is not None else "cost unknown"
    worst = f", at most ${d.worst_cost_usd:.4f} before re-asks" if d.worst_cost_usd else ""
    return (
        f"Teacher: {ref} (OPENAI_API_KEY is set; pass --teacher to choose "
        f"another): {n} conversations, {cost}{worst}."
    )
