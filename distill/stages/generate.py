"""generate: expand a few seed conversations into n varied, style-consistent ones.

1. A plan: one point per example on the style spec's axes (topic x persona x intent x turns),
   each axis covered evenly, deterministic under `seed`, and stable as n grows.
2. For each point the teacher sees a few seeds (closest to its topic first) and writes one
   conversation as a typed object whose validators carry the voice rules. A reply that breaks
   them is re-asked (`max_reasks`); what still fails goes to rejected.jsonl with the reason.
3. Every attempt goes through calls.sqlite and every outcome is appended to generated.jsonl or
   rejected.jsonl, so a rerun after a crash re-sends nothing that finished and skips every
   plan point already accounted for.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from distill.backends import close_backend, get_backend
from distill.backends.base import Backend, InvalidOutput, Usage, _first_error, cached_chat
from distill.calls import CallLog
from distill.errors import BackendError, BudgetExceeded, InputError, RunError, UsageError
from distill.models import DEFAULT_TEACHER, inference_price, parse_model
from distill.records import Example
from distill.runs import Run, append_jsonl, read_jsonl, sha256_file, sha256_text
from distill.style import Axes, StyleSpec, count_words

STAGE = "generate"
PROMPT_NAMES = ("teacher_system", "generate", "reask", "axes", "customer", "reask_reply")


# -- prompts ------------------------------------------------------------------------------
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


# -- the plan -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanPoint:
    plan_index: int
    topic: str
    persona: str
    intent: str
    turns: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _axis_sequence(values: list[Any], n: int, rng: random.Random) -> list[Any]:
    """n values cycling through shuffled rounds of `values`: every value appears n/len times
    (within one), and the first k of a longer sequence are the same as a shorter one's."""
    out: list[Any] = []
    while len(out) < n:
        block = list(values)
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def make_plan(axes: Axes, n: int, seed: int = 0) -> list[PlanPoint]:
    """Balanced, deterministic plan points. Each axis gets its own RNG stream, so the plan
    for n is a prefix of the plan for any larger n."""
    seqs = []
    for i, values in enumerate(
        (axes.topics or ["any"], axes.personas or ["any customer"], axes.intents or ["ask"])
    ):
        seqs.append(_axis_sequence(list(values), n, random.Random(f"{seed}:{i}")))
    turns = _axis_sequence(list(axes.turns), n, random.Random(f"{seed}:turns"))
    return [PlanPoint(i, seqs[0][i], seqs[1][i], seqs[2][i], int(turns[i])) for i in range(n)]


# -- the output type ----------------------------------------------------------------------
class Exchange(BaseModel):
    """One exchange: the customer's message, then the assistant's reply."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=300, description="the customer's message")
    assistant: str = Field(min_length=1, description="the support assistant's reply")


def _exchange_type(spec: StyleSpec, reply_pattern: str | None = None) -> type[Exchange]:
    """Exchange with the reply's length bounded in the schema too, so constrained decoding
    closes the string instead of rambling to the token limit. `reply_pattern` (for small
    local teachers) goes into the schema only: the grammar follows it, validation does not."""
    limit = spec.reply.max_words * 9 + 40
    desc = "the support assistant's reply"
    if reply_pattern:  # the pattern bounds the length itself (xgrammar ignores maxLength then)
        reply = Field(description=desc, json_schema_extra={"pattern": reply_pattern})
    else:
        reply = Field(min_length=1, max_length=limit, description=desc)
    return create_model("Exchange", __base__=Exchange, assistant=(str, reply))


_MARKDOWN_PROBES = {"*": "**x**", "#": "# x", "`": "`x`", "_": "__x__"}


def reply_pattern(spec: StyleSpec, seeds: list[Seed]) -> str | None:
    """A regex for constrained decoding that writes replies the way the seeds' replies go:
    an opening from the seeds (one the spec's first-sentence rules accept), then a sentence
    starting with a seed's next-step word (one the spec's must-match rules accept), then at
    most the spec's remaining sentences, without the characters the spec forbids (markdown).
    It steers a tiny model into the voice; the validators still judge the result. None when
    the seeds give no usable opening."""
    first_rules = [r.first_sentence_must_match for r in spec.rules if r.first_sentence_must_match]
    must = [r.must_match for r in spec.rules if r.must_match]
    openers: list[str] = []
    starters: list[str] = []
    for seed in seeds:
        for ex in seed.exchanges:
            reply = ex["assistant"].strip()
            m = re.match(r"([A-Za-z][A-Za-z' ]{1,24}?)[!,.]", reply)
            if m and len(words := m.group(1).split()) <= 3:  # an opening, not a whole clause
                opener = " ".join(words)
                if opener not in openers and all(re.search(r, opener) for r in first_rules):
                    openers.append(opener)
            for sentence in re.split(r"(?<=[.!?])\s+", reply)[1:]:
                words = re.findall(r"[A-Za-z']+", sentence)[:2]
                for k in (1, 2):
                    starter = " ".join(words[:k])
                    if len(words) >= k and all(re.search(r, starter) for r in must):
                        if starter not in starters:
                            starters.append(starter)
                        break
    if not openers:
        return None
    banned = {
        ch
        for ch, probe in _MARKDOWN_PROBES.items()
        if any(r.must_not_match and re.search(r.must_not_match, probe, re.M) for r in spec.rules)
    }
    chars = "A-Za-z0-9 ,'£€$%&()/:;+=" + "".join(c for c in "*#`_" if c not in banned) + "-"
    longest = max(40, spec.reply.max_words * 5 // max(1, spec.reply.max_sentences - 1))
    head = "(" + "|".join(openers[:24]) + ")[!,.] "  # letters, spaces and apostrophes only
    if starters:
        head += "(" + "|".join(starters[:24]) + ") "
    more = max(0, spec.reply.max_sentences - 2)
    tail = f"( [{chars}]{{8,{longest}}}[.!?]){{0,{more}}}" if more else ""
    return f"{head}[{chars}]{{4,{longest}}}[.!?]{tail}"


_CUSTOMER_VOICE = re.compile(
    r"(?i)\b(my order|my parcel|my package|my delivery|my refund|i ordered|i bought|"
    r"i received my|where is my|i want a refund|i'd like a refund)\b"
)
_AGENT_VOICE = re.compile(
    r"(?i)(how can i help|how may i help|how can i assist|how may i assist|"
    r"greenleaf support here|thanks for contacting|thank you for contacting|welcome to)"
)
_AGENT_APOLOGY = re.compile(
    r"(?i)^\W*(i'm (really |so )?sorry|so sorry|sorry)[^.!?]*\b(i'll|i've|we'll|we've)\b"
)
_LOOP = re.compile(r"(?i)\b(\w+)(\W+\1\b){2,}")
_NARRATION = re.compile(r"(?i)\bthe (customer|assistant|support agent)\b")
_STOP = {"and", "the", "for", "with", "from", "into", "about", "question", "changes", "advice"}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def topic_keys(topic: str) -> list[str]:
    """Word stems that show a conversation is about `topic` (first 5 letters of each word)."""
    words = re.findall(r"[a-z]+", topic.lower())
    return [w[:5] for w in words if len(w) >= 4 and w not in _STOP]


def conversation_problems(
    spec: StyleSpec, exchanges: list[Exchange], topic: str | None = None
) -> list[str]:
    """Every way a generated conversation breaks the spec; empty when it passes."""
    problems: list[str] = []
    seen: list[set[str]] = []
    for i, ex in enumerate(exchanges, 1):
        user, reply = ex.user.strip(), ex.assistant.strip()
        if count_words(user) < 3:
            problems.append(f"exchange {i}: the customer's message needs at least 3 words")
        if _AGENT_APOLOGY.search(user):
            problems.append(
                f"exchange {i}: role-swap: the customer apologises and promises like the agent"
            )
        if m := _LOOP.search(f"{user} {reply}"):
            problems.append(f"exchange {i}: repeats itself ({m.group(0)!r})")
        if _AGENT_VOICE.search(user):
            problems.append(
                f"exchange {i}: role-swap: the customer's message talks like the support agent"
            )
        if m := _CUSTOMER_VOICE.search(reply):
            problems.append(
                f"exchange {i}: role-swap: the assistant reply talks like the customer "
                f"({m.group(0)!r}); the assistant is the support agent"
            )
        if _NARRATION.search(user) or _NARRATION.search(reply):
            problems.append(
                f"exchange {i}: narrates ('the customer ...') instead of writing the chat itself"
            )
        words = _words(reply)
        if any(len(words & w) / len(words | w) >= 0.6 for w in seen if words | w):
            problems.append(f"exchange {i}: repeats an earlier reply")
        seen.append(words)
        problems.extend(f"exchange {i} reply: {p}" for p in spec.check_reply(reply))
    if topic and (keys := topic_keys(topic)):
        text = " ".join(f"{e.user} {e.assistant}" for e in exchanges).lower()
        if not any(k in text for k in keys):
            problems.append(f"off-topic: the chat must be about {topic!r}")
    return problems


class ConversationTypes:
    """One pydantic type per (turns, topic) whose validators carry the style spec's rules;
    built once and reused so each backend caches its schema and validator."""

    def __init__(
        self, spec: StyleSpec, topic_check: bool = False, reply_pattern: str | None = None
    ) -> None:
        self.spec = spec
        self.topic_check = topic_check
        self.reply_pattern = reply_pattern
        self._types: dict[tuple[int, str | None], type[BaseModel]] = {}

    def get(self, turns: int, topic: str | None = None) -> type[BaseModel]:
        key = (turns, topic if self.topic_check else None)
        if key not in self._types:
            self._types[key] = _conversation_type(self.spec, turns, key[1], self.reply_pattern)
        return self._types[key]


def _conversation_type(
    spec: StyleSpec, turns: int, topic: str | None, pattern: str | None = None
) -> type[BaseModel]:
    exchange = _exchange_type(spec, pattern)

    class Conversation(BaseModel):
        """One chat between a customer and the support assistant."""

        model_config = ConfigDict(extra="forbid", title="Conversation")

        exchanges: list[exchange] = Field(  # type: ignore[valid-type]
            min_length=turns,
            max_length=turns,
            description=f"exactly {turns} exchange(s), customer first",
        )

        @model_validator(mode="after")
        def _voice(self) -> Conversation:
            problems = conversation_problems(spec, self.exchanges, topic)
            if problems:
                more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
                raise ValueError("; ".join(problems[:3]) + more)
            return self

    return Conversation


def reply_type(spec: StyleSpec, pattern: str | None = None) -> type[BaseModel]:
    """One assistant reply as a typed object (role-play mode): the spec's rules as validators,
    the seeds' pattern (if any) in the schema for constrained decoding."""
    extra: Any = {"pattern": pattern} if pattern else None

    class Reply(BaseModel):
        """The support assistant's reply."""

        model_config = ConfigDict(extra="forbid", title="Reply")

        reply: str = Field(description="the support assistant's reply", json_schema_extra=extra)

        @model_validator(mode="after")
        def _voice(self) -> Reply:
            text = self.reply.strip()
            problems = list(spec.check_reply(text))
            if m := _CUSTOMER_VOICE.search(text):
                problems.append(f"role-swap: the reply talks like the customer ({m.group(0)!r})")
            if _NARRATION.search(text):
                problems.append("narrates ('the customer ...') instead of replying")
            if m := _LOOP.search(text):
                problems.append(f"repeats itself ({m.group(0)!r})")
            if problems:
                raise ValueError("; ".join(problems[:3]))
            return self

    return Reply


_CHAT_CHARS = "A-Za-z0-9 ,.!?'£€$%&()/:;+=-"


def customer_type(topic: str | None = None) -> type[BaseModel]:
    """The customer's message (role-play mode). With a topic, the schema's pattern makes a
    constrained model mention it (one of the topic's word stems)."""
    keys = topic_keys(topic) if topic else []
    extra: Any = None
    if keys:
        c = _CHAT_CHARS
        extra = {"pattern": f"[{c}]{{0,60}}({'|'.join(keys)})[{c}]{{2,120}}"}

    class CustomerMessage(BaseModel):
        """The customer's next chat message."""

        model_config = ConfigDict(extra="forbid", title="CustomerMessage")

        message: str = Field(description="the customer's message", json_schema_extra=extra)

        @model_validator(mode="after")
        def _customer(self) -> CustomerMessage:
            text = self.message.strip()
            if count_words(text) < 3:
                raise ValueError("the customer's message needs at least 3 words")
            if _NARRATION.search(text) or _AGENT_APOLOGY.search(text) or _AGENT_VOICE.search(text):
                raise ValueError("write as the customer, to the support agent")
            return self

    return CustomerMessage


def customer_text(raw: str) -> str:
    """A customer's chat message from free text: first line, at most two sentences."""
    text = raw.strip().strip('"').split("\n")[0].strip().strip('"')
    parts = re.split(r"(?<=[.!?])\s+", text)
    return " ".join(parts[:2])[:300]


class ProposedAxes(BaseModel):
    """Diversity axes the teacher proposes when the style spec has none."""

    model_config = ConfigDict(extra="forbid")

    topics: list[str] = Field(min_length=3, max_length=20)
    personas: list[str] = Field(min_length=2, max_length=10)
    intents: list[str] = Field(min_length=2, max_length=8)


# -- seeds --------------------------------------------------------------------------------
@dataclass
class Seed:
    exchanges: list[dict[str, str]]
    text: str


def load_seeds(path: Path) -> list[Seed]:
    """Seed chats as user/assistant exchanges; InputError naming file:line on a bad one."""
    seeds = []
    for lineno, rec in enumerate(read_jsonl(path), 1):
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise InputError(f'{path}:{lineno}: expected {{"messages": [...]}} (chat format)')
        pairs: list[dict[str, str]] = []
        pending: str | None = None
        for m in msgs:
            role, content = m.get("role"), m.get("content")
            if role == "user":
                pending = str(content or "")
            elif role == "assistant" and pending is not None:
                pairs.append({"user": pending, "assistant": str(content or "")})
                pending = None
        if not pairs:
            raise InputError(f"{path}:{lineno}: no user message followed by an assistant reply")
        text = " ".join(f"{p['user']} {p['assistant']}" for p in pairs)
        seeds.append(Seed(pairs, text))
    if not seeds:
        raise InputError(f"{path}: no seed conversations; add some chat-format lines")
    return seeds


def pick_examples(seeds: list[Seed], point: PlanPoint, k: int) -> list[Seed]:
    """The seed closest to the point's topic first, then others rotating with the index."""
    if k <= 0:
        return []
    keys = topic_keys(point.topic)
    scores = [sum(s.text.lower().count(key) for key in keys) for s in seeds]
    order = sorted(
        range(len(seeds)), key=lambda i: (-scores[i], (i - point.plan_index) % len(seeds))
    )
    first = order[0]
    rest = [(point.plan_index + j) % len(seeds) for j in range(len(seeds))]
    chosen = [first] + [i for i in rest if i != first][: k - 1]
    return [seeds[i] for i in chosen]


def _format_examples(examples: list[Seed]) -> str:
    return "\n".join(json.dumps({"exchanges": s.exchanges}, ensure_ascii=False) for s in examples)


def _rules_text(spec: StyleSpec) -> str:
    return "\n".join(f"- {r.name}: {r.why or r.name}" for r in spec.rules)


def build_messages(
    spec: StyleSpec, seeds: list[Seed], point: PlanPoint, k: int
) -> tuple[list[dict[str, Any]], list[Seed]]:
    examples = pick_examples(seeds, point, k)
    user = render(
        "generate",
        system_prompt=spec.system_prompt,
        description=" ".join(spec.description.split()) or "(not given)",
        scope=spec.scope.description or "(anything)",
        min_words=spec.reply.min_words,
        max_words=spec.reply.max_words,
        max_sentences=spec.reply.max_sentences,
        rules=_rules_text(spec),
        examples=_format_examples(examples),
        topic=point.topic,
        persona=point.persona,
        intent=point.intent,
        turns=point.turns,
    )
    system = prompt_text("teacher_system").strip()
    return [{"role": "system", "content": system}, {"role": "user", "content": user}], examples


def copied_example(value: Any, examples: list[Seed], threshold: float = 0.7) -> str | None:
    """A problem message when a turn (nearly) copies a shown example: 70 % or more of its
    words shared (Jaccard) with a message of the example."""
    shown = [_words(p[k]) for s in examples for p in s.exchanges for k in ("user", "assistant")]
    for i, ex in enumerate(value.exchanges, 1):
        for text in (ex.user, ex.assistant):
            words = _words(text)
            for other in shown:
                if words and other and len(words & other) / len(words | other) >= threshold:
                    return f"exchange {i} copies an example chat; write a new one for the topic"
    return None


def max_tokens_for(turns: int) -> int:
    return 80 + 160 * turns


# -- options and results ------------------------------------------------------------------
@dataclass
class GenerateOptions:
    seeds: Path
    style: Path | None = None
    n: int = 300
    teacher: str = DEFAULT_TEACHER
    base_url: str | None = None
    name: str | None = None
    seed: int = 0
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 60.0
    max_budget: float | None = None
    max_reasks: int = 2
    temperature: float = 0.8
    examples: int | None = None  # seeds shown per request (default 3; 1 for local teachers)
    topic_check: bool | None = None  # default: on for local teachers
    roleplay: bool | None = None  # one call per turn (default for local teachers)
    outputs: Path | None = None
    backend_opts: dict[str, Any] = field(default_factory=dict)

    def style_path(self) -> Path:
        if self.style is not None:
            return self.style
        stem = self.seeds.name.removesuffix(".jsonl")
        return self.seeds.with_name(f"{stem}.style.toml")

    def run_name(self) -> str:
        return self.name or self.seeds.name.removesuffix(".jsonl")

    def is_local(self) -> bool:
        return parse_model(self.teacher).provider == "local"

    def n_examples(self) -> int:
        return self.examples if self.examples is not None else (1 if self.is_local() else 3)

    def use_roleplay(self) -> bool:
        return self.roleplay if self.roleplay is not None else self.is_local()

    def check_topic(self) -> bool:
        return self.topic_check if self.topic_check is not None else self.is_local()

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


@dataclass
class Progress:
    """What the progress bar shows."""

    done: int = 0
    total: int = 0
    generated: int = 0
    rejected: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    reasks: int = 0
    calls: int = 0
    cached: int = 0


@dataclass
class GenerateResult:
    run: Run
    progress: Progress
    elapsed_s: float
    faults: dict[str, int]
    stopped: str | None = None  # "budget" when --max-budget stopped it


@dataclass
class DryRun:
    plan: list[PlanPoint]
    prompt_tokens: int
    completion_tokens: int
    worst_completion_tokens: int
    price: tuple[float, float] | None
    axes_source: str

    @property
    def cost_usd(self) -> float | None:
        if self.price is None:
            return None
        return (self.prompt_tokens * self.price[0] + self.completion_tokens * self.price[1]) / 1e6

    @property
    def worst_cost_usd(self) -> float | None:
        if self.price is None:
            return None
        worst_in = self.prompt_tokens * self.price[0]
        return (worst_in + self.worst_completion_tokens * self.price[1]) / 1e6


# -- budget -------------------------------------------------------------------------------
class Budget:
    """A hard cap: a request is sent only if everything spent plus every request in flight at
    its worst case (prompt + max_tokens at list price) stays within the cap."""

    def __init__(self, limit: float | None, spent: float, price: tuple[float, float] | None):
        self.limit = limit
        self.spent = spent
        self.in_flight = 0.0
        self.price = price

    def worst(self, prompt_tokens: int, max_tokens: int) -> float:
        if self.price is None:
            return 0.0
        return (prompt_tokens * self.price[0] + max_tokens * self.price[1]) / 1e6

    def reserve(self, amount: float) -> bool:
        if self.limit is not None and self.spent + self.in_flight + amount > self.limit:
            return False
        self.in_flight += amount
        return True

    def settle(self, reserved: float, cost: float) -> None:
        self.in_flight -= reserved
        self.spent += cost


class _BudgetStop(Exception):
    pass


# -- the stage ----------------------------------------------------------------------------
def _count_tokens(texts: list[str]) -> int:
    try:
        import quicktok

        enc = quicktok.get_encoding("o200k_base")
        return sum(len(enc.encode(t)) for t in texts)
    except Exception:  # pragma: no cover - quicktok is a dependency; fall back to 4 chars
        return sum(len(t) // 4 for t in texts)


def _done_indices(run: Run) -> tuple[set[int], set[int], set[str]]:
    """Plan indices already generated / rejected, and ids already written."""
    gen_idx, rej_idx, ids = set(), set(), set()
    gen = run.file("generated.jsonl")
    if gen.exists():
        for rec in read_jsonl(gen):
            ids.add(str(rec.get("id")))
            idx = (rec.get("meta") or {}).get("plan_index")
            if isinstance(idx, int):
                gen_idx.add(idx)
    rej = run.file("rejected.jsonl")
    if rej.exists():
        for row in read_jsonl(rej):
            if row.get("stage") != STAGE:
                continue
            idx = ((row.get("example") or {}).get("meta") or {}).get("plan_index")
            if isinstance(idx, int):
                rej_idx.add(idx)
    return gen_idx, rej_idx, ids


def _resolve_axes(
    spec: StyleSpec, seeds: list[Seed], backend: Backend | None, calls: CallLog | None
) -> tuple[Axes, str]:
    if not spec.axes.is_empty():
        return spec.axes, "spec"
    if backend is None or calls is None:
        return spec.axes, "teacher (asked when generating)"
    messages = [
        {"role": "system", "content": prompt_text("teacher_system").strip()},
        {
            "role": "user",
            "content": render(
                "axes",
                system_prompt=spec.system_prompt,
                description=" ".join(spec.description.split()) or "(not given)",
                examples=_format_examples(seeds[:8]),
            ),
        },
    ]

    async def ask() -> Any:
        try:
            return await cached_chat(
                backend,
                calls,
                STAGE,
                messages,
                response_model=ProposedAxes,
                max_retries=2,
                temperature=0.3,
                max_tokens=800,
            )
        finally:
            await close_backend(backend)

    try:
        reply = asyncio.run(ask())
    except InvalidOutput as e:
        raise InputError(
            f"{spec.source}: the style spec has no [axes] and the teacher could not propose "
            f"them ({e}); add topics/personas/intents under [axes]"
        ) from None
    proposed = reply.value
    axes = Axes(
        topics=proposed.topics,
        personas=proposed.personas,
        intents=proposed.intents,
        turns=spec.axes.turns,
    )
    return axes, "teacher"


def dry_run(opts: GenerateOptions) -> DryRun:
    """The plan and the estimated tokens and cost; sends nothing, writes nothing."""
    opts.validate()
    spec = StyleSpec.load(opts.style_path())
    seeds = load_seeds(opts.seeds)
    axes, source = _resolve_axes(spec, seeds, None, None)
    plan = make_plan(axes, opts.n, opts.seed)
    prompts = [
        m["content"] for p in plan for m in build_messages(spec, seeds, p, opts.n_examples())[0]
    ]
    prompt_tokens = _count_tokens(prompts)
    per_exchange = _count_tokens(
        [json.dumps(p, ensure_ascii=False) for s in seeds for p in s.exchanges]
    ) / max(1, sum(len(s.exchanges) for s in seeds))
    completion = int(sum(per_exchange * p.turns + 8 for p in plan))
    worst = sum(max_tokens_for(p.turns) for p in plan)
    ref = parse_model(opts.teacher)
    price = inference_price(ref.name) if ref.provider == "openai" else (0.0, 0.0)
    return DryRun(plan, prompt_tokens, completion, worst, price, source)


def generate(
    opts: GenerateOptions,
    *,
    backend: Backend | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> GenerateResult:
    """Run (or resume) generation into outputs/<name>/. `backend` overrides the teacher
    string (tests pass a FakeBackend)."""
    opts.validate()
    style_path = opts.style_path()
    spec = StyleSpec.load(style_path)
    seeds = load_seeds(opts.seeds)
    run = Run.create(opts.run_name(), outputs=opts.outputs)
    teacher = backend or get_backend(
        opts.teacher,
        base_url=opts.base_url,
        timeout=opts.timeout,
        rpm=opts.rpm,
        tpm=opts.tpm,
        batch_size=min(8, opts.concurrency) if opts.is_local() else None,
        **opts.backend_opts,
    )
    teacher_name = str(teacher.ref)
    _check_same_plan(run, opts, spec)
    run.update_manifest(
        inputs={
            "seeds": {"path": str(opts.seeds.resolve()), "sha256": sha256_file(opts.seeds)},
            "style": {"path": str(style_path.resolve()), "sha256": sha256_file(style_path)},
            "prompts": prompt_hashes(),
        },
        config={
            "teacher": teacher_name,
            "generate": {
                "teacher": teacher_name,
                "base_url": opts.base_url,
                "n": opts.n,
                "seed": opts.seed,
                "concurrency": opts.concurrency,
                "rpm": opts.rpm,
                "tpm": opts.tpm,
                "timeout": opts.timeout,
                "max_budget": opts.max_budget,
                "max_reasks": opts.max_reasks,
                "temperature": opts.temperature,
                "examples": opts.n_examples(),
                "topic_check": opts.check_topic(),
                "roleplay": opts.use_roleplay(),
                "style_sha256": sha256_file(style_path),
            },
        },
    )
    calls = CallLog(run.file("calls.sqlite"))
    try:
        manifest = run.manifest
        if manifest.get("axes") and spec.axes.is_empty():
            saved = {k: v for k, v in manifest["axes"].items() if k != "source"}
            axes, source = Axes(**saved), "teacher"
        else:
            axes, source = _resolve_axes(spec, seeds, teacher, calls)
        plan = make_plan(axes, opts.n, opts.seed)
        run.update_manifest(
            axes={**axes.model_dump(), "source": source},
            plan=[p.to_dict() for p in plan],
        )
        return _generate_plan(run, opts, spec, seeds, plan, teacher, calls, on_progress)
    finally:
        calls.close()


def _check_same_plan(run: Run, opts: GenerateOptions, spec: StyleSpec) -> None:
    """Resuming with another --seed or style would mix two plans in one run folder."""
    prev = run.manifest.get("config", {}).get("generate")
    started = run.file("generated.jsonl").exists() or run.file("rejected.jsonl").exists()
    if not prev or not started:
        return
    if prev.get("seed") != opts.seed:
        raise RunError(
            f"{run.path} was generated with --seed {prev.get('seed')}; rerun with that seed, "
            "or pass --name NEW for a new run"
        )
    if prev.get("style_sha256") not in (None, sha256_file(opts.style_path())):
        raise RunError(
            f"{run.path} was generated with another version of {opts.style_path()}; pass "
            "--name NEW for a new run (or restore the style spec)"
        )


def _generate_plan(
    run: Run,
    opts: GenerateOptions,
    spec: StyleSpec,
    seeds: list[Seed],
    plan: list[PlanPoint],
    teacher: Backend,
    calls: CallLog,
    on_progress: Callable[[Progress], None] | None,
) -> GenerateResult:
    gen_idx, rej_idx, ids = _done_indices(run)
    todo = [p for p in plan if p.plan_index not in gen_idx and p.plan_index not in rej_idx]
    prog = Progress(
        done=len(plan) - len(todo),
        total=len(plan),
        generated=len([i for i in gen_idx if i < len(plan)]),
        rejected=len([i for i in rej_idx if i < len(plan)]),
    )
    before = calls.totals(STAGE)
    prog.cost_usd = before["cost_usd"]
    prog.tokens = int(before["prompt_tokens"] + before["completion_tokens"])
    price = inference_price(teacher.ref.name) if teacher.ref.provider == "openai" else None
    budget = Budget(opts.max_budget, before["cost_usd"], price)
    pattern = reply_pattern(spec, seeds) if opts.is_local() else None
    types = ConversationTypes(spec, topic_check=opts.check_topic(), reply_pattern=pattern)
    state = _LoopState(run, opts, spec, seeds, teacher, calls, types, budget, prog, ids)
    state.on_progress = on_progress
    run.record_stage(STAGE, "running", planned=len(plan), teacher=str(teacher.ref))
    t0 = time.perf_counter()
    if on_progress:
        on_progress(prog)
    status = "interrupted"
    try:
        asyncio.run(state.run_all(todo))
        status = "stopped-budget" if state.stopped else "done"
    except BackendError:
        status = "failed"
        raise
    finally:
        elapsed = time.perf_counter() - t0
        faults = dict(getattr(teacher, "faults", {}) or {})
        run.record_stage(
            STAGE,
            status,
            planned=len(plan),
            counts={
                "planned": len(plan),
                "generated": prog.generated,
                "rejected": prog.rejected,
                "remaining": prog.total - prog.done,
            },
            usage={
                **calls.totals(STAGE),
                "reasks_this_session": prog.reasks,
                "calls_this_session": prog.calls,
                "cached_this_session": prog.cached,
            },
            cost_usd=round(prog.cost_usd, 6),
            teacher=str(teacher.ref),
            elapsed_s=round(elapsed, 2),
            transient_faults=faults,
        )
    if state.stopped:
        raise BudgetExceeded(
            f"--max-budget ${opts.max_budget:g} reached: spent ${prog.cost_usd:.4f}, "
            f"{prog.done} of {prog.total} done; raise --max-budget and rerun to continue"
        )
    return GenerateResult(run, prog, elapsed, faults, None)


class _Writer:
    """Whole-line appends to generated.jsonl / rejected.jsonl, batched and fsynced off the
    event loop every `every_s`. A kill loses at most the unflushed lines, and a rerun replays
    those from calls.sqlite without sending anything."""

    def __init__(self, run: Run, every_s: float = 0.25) -> None:
        self.run = run
        self.every_s = every_s
        self.generated: list[dict[str, Any]] = []
        self.rejected: list[tuple[dict[str, Any], str, str]] = []
        self._lock = asyncio.Lock()

    def _take(self) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str, str]]]:
        gen, rej = self.generated, self.rejected
        self.generated, self.rejected = [], []
        return gen, rej

    def _write(self, gen: list[dict[str, Any]], rej: list[tuple[dict[str, Any], str, str]]) -> None:
        if gen:
            append_jsonl(self.run.file("generated.jsonl"), gen)
        if rej:
            self.run.reject(rej)

    async def flush(self) -> None:
        async with self._lock:
            gen, rej = self._take()
            if gen or rej:
                await asyncio.to_thread(self._write, gen, rej)

    def flush_now(self) -> None:
        self._write(*self._take())

    async def run_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self.flush()


class _LoopState:
    def __init__(
        self,
        run: Run,
        opts: GenerateOptions,
        spec: StyleSpec,
        seeds: list[Seed],
        teacher: Backend,
        calls: CallLog,
        types: ConversationTypes,
        budget: Budget,
        prog: Progress,
        ids: set[str],
    ) -> None:
        self.run, self.opts, self.spec, self.seeds = run, opts, spec, seeds
        self.teacher, self.calls, self.types, self.budget = teacher, calls, types, budget
        self.prog, self.ids = prog, ids
        self.stopped = False
        self._reply_type: Any = None
        self._customer_types: dict[str | None, Any] = {}
        self.writer = _Writer(run)
        self.on_progress: Callable[[Progress], None] | None = None
        self.teacher_name = str(teacher.ref)

    async def run_all(self, todo: list[PlanPoint]) -> None:
        queue: asyncio.Queue[PlanPoint] = asyncio.Queue()
        for p in todo:
            queue.put_nowait(p)

        async def worker() -> None:
            while not self.stopped:
                try:
                    point = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await self.one(point)

        workers = [
            asyncio.create_task(worker()) for _ in range(min(self.opts.concurrency, len(todo)))
        ]
        flusher = asyncio.create_task(self.writer.run_periodically())
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            self.writer.flush_now()
            await close_backend(self.teacher)

    async def one(self, point: PlanPoint) -> None:
        if self.opts.use_roleplay():
            await self.one_roleplay(point)
            return
        messages, examples = build_messages(self.spec, self.seeds, point, self.opts.n_examples())
        model = self.types.get(point.turns, point.topic)
        max_tokens = max_tokens_for(point.turns)
        prompt_est = sum(len(m["content"]) for m in messages) // 3
        convo = messages
        error, raw, attempts = "", "", 0
        for attempt in range(self.opts.max_reasks + 1):
            reserved = self.budget.worst(prompt_est + len(raw) // 3 * attempt, max_tokens)
            if not self.budget.reserve(reserved):
                self.stopped = True
                return  # left for a rerun with a bigger budget: not rejected
            attempts += 1
            cost = 0.0
            try:
                reply = await cached_chat(
                    self.teacher,
                    self.calls,
                    STAGE,
                    convo,
                    response_model=model,
                    max_retries=0,
                    temperature=self.opts.temperature,
                    max_tokens=max_tokens,
                    seed=self.opts.seed * 100_003 + point.plan_index,
                )
                self._count(reply.usage, reply.cached)
                cost = 0.0 if reply.cached else reply.usage.cost_usd
                raw = reply.text
                problem = copied_example(reply.value, examples)
                if problem is None:
                    self._accept(point, reply.value, attempts)
                    return
                error = problem
            except InvalidOutput as e:
                self._count(e.usage, False)
                cost = e.usage.cost_usd
                raw, error = e.raw, str(e)
            finally:
                self.budget.settle(reserved, cost)
            if attempt < self.opts.max_reasks:
                self.prog.reasks += 1
                convo = messages + [
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": render("reask", error=error)},
                ]
        self._reject(point, raw, error, attempts)

    async def _call(self, messages: list[dict[str, Any]], model: Any, max_tokens: int, seed: int):
        return await cached_chat(
            self.teacher,
            self.calls,
            STAGE,
            messages,
            response_model=model,
            max_retries=0,
            temperature=self.opts.temperature,
            max_tokens=max_tokens,
            seed=seed,
        )

    async def one_roleplay(self, point: PlanPoint) -> None:
        """Role-play mode, for small teachers that cannot write a whole chat: the teacher
        writes each customer message as the customer (free text), then answers it as the
        assistant under the spec's system prompt (typed, re-asked like a whole chat)."""
        seed = self.opts.seed * 100_003 + point.plan_index
        reply_model = self._reply_model()
        history: list[dict[str, str]] = []
        exchanges: list[dict[str, str]] = []
        attempts, raw, error = 0, "", ""
        for turn in range(point.turns):
            so_far = "\n".join(f"{m['role']}: {m['content']}" for m in history)
            ask = render(
                "customer",
                description=" ".join(self.spec.description.split()) or "(not given)",
                persona=point.persona,
                intent=point.intent,
                topic=point.topic,
                history=f"The chat so far:\n{so_far}\n" if history else "",
            )
            attempts += 1
            try:
                said = await self._call(
                    [{"role": "user", "content": ask}],
                    self._customer_model(point),
                    160,
                    seed + turn,
                )
            except InvalidOutput as e:
                self._count(e.usage, False)
                self._reject(point, e.raw, f"exchange {turn + 1} customer: {e}", attempts)
                return
            self._count(said.usage, said.cached)
            user = customer_text(said.value.message)
            convo = [{"role": "system", "content": self.spec.system_prompt}, *history]
            convo.append({"role": "user", "content": user})
            answer = None
            for attempt in range(self.opts.max_reasks + 1):
                attempts += 1
                try:
                    got = await self._call(convo, reply_model, 120, seed + turn)
                    self._count(got.usage, got.cached)
                    answer = got.value.reply.strip()
                    break
                except InvalidOutput as e:
                    self._count(e.usage, False)
                    raw, error = e.raw, str(e)
                if attempt < self.opts.max_reasks:
                    self.prog.reasks += 1
                    convo = convo + [
                        {"role": "assistant", "content": raw},
                        {"role": "user", "content": render("reask_reply", error=error)},
                    ]
            if answer is None:
                self._reject(point, raw, f"exchange {turn + 1} reply: {error}", attempts)
                return
            exchanges.append({"user": user, "assistant": answer})
            history += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        try:
            value = self.types.get(point.turns, point.topic).model_validate(
                {"exchanges": exchanges}
            )
        except ValidationError as e:
            self._reject(point, json.dumps({"exchanges": exchanges}), _first_error(e), attempts)
            return
        self._accept(point, value, attempts)

    def _customer_model(self, point: PlanPoint) -> Any:
        topic = point.topic if self.opts.check_topic() else None
        if topic not in self._customer_types:
            self._customer_types[topic] = customer_type(topic)
        return self._customer_types[topic]

    def _reply_model(self) -> Any:
        if self._reply_type is None:
            self._reply_type = reply_type(self.spec, self.types.reply_pattern)
        return self._reply_type

    def _count(self, usage: Usage, cached: bool) -> None:
        self.prog.calls += 1
        if cached:
            self.prog.cached += 1
            return
        self.prog.tokens += usage.prompt_tokens + usage.completion_tokens
        self.prog.cost_usd += usage.cost_usd

    def _meta(self, point: PlanPoint, attempts: int) -> dict[str, Any]:
        return {
            **point.to_dict(),
            "teacher": self.teacher_name,
            "attempts": attempts,
            "source": STAGE,
        }

    def _accept(self, point: PlanPoint, value: Any, attempts: int) -> None:
        messages = [{"role": "system", "content": self.spec.system_prompt}]
        for ex in value.exchanges:
            messages.append({"role": "user", "content": ex.user.strip()})
            messages.append({"role": "assistant", "content": ex.assistant.strip()})
        example = Example.model_validate(
            {"messages": messages, "meta": self._meta(point, attempts)}
        )
        record = example.to_record()
        if example.id in self.ids:
            self.writer.rejected.append(
                (record, STAGE, f"duplicate: same conversation as {example.id}")
            )
            self.prog.rejected += 1
        else:
            self.ids.add(example.id)
            self.writer.generated.append(record)
            self.prog.generated += 1
        self._tick()

    def _reject(self, point: PlanPoint, raw: str, error: str, attempts: int) -> None:
        record = {
            "id": f"plan-{point.plan_index}",
            "messages": [],
            "meta": {**self._meta(point, attempts), "raw": raw[:4000]},
        }
        self.writer.rejected.append(
            (record, STAGE, f"invalid after {attempts} attempt(s): {error}")
        )
        self.prog.rejected += 1
        self._tick()

    def _tick(self) -> None:
        self.prog.done += 1
        if self.on_progress:
            self.on_progress(self.prog)


def reject_reasons(run: Run, limit: int = 5) -> list[tuple[str, int]]:
    """The most common reasons generation rejected examples (for the summary line)."""
    path = run.file("rejected.jsonl")
    if not path.exists():
        return []
    reasons: Counter[str] = Counter()
    for row in read_jsonl(path):
        if row.get("stage") == STAGE:
            reason = str(row.get("reason", ""))
            reason = re.sub(r"^invalid after \d+ attempt\(s\): ", "", reason)
            reason = re.sub(r"exchange \d+( reply)?: ", "", reason).split(";")[0].split(" (")[0]
            reasons[reason[:80]] += 1
    return reasons.most_common(limit)
