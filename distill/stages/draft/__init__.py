"""`distill init`: draft a style spec from a seeds file for a person to edit.

The measured parts (system prompt, reply limits, turns, stock rules every seed keeps) need no
model (measure.py); a capable teacher proposes the rest (propose.py). Every rule is checked
against the seeds: one that the user's own examples break is written commented out, never
active. The draft is read back with StyleSpec before it is written (toml_text.py).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from distill import runs
from distill.errors import ConfigError, UsageError
from distill.runs import atomic_write_text
from distill.stages.draft.measure import Measured, business_name, measure
from distill.stages.draft.propose import Proposal, ask_teacher
from distill.stages.draft.toml_text import DraftRule, Part, spec_text
from distill.style import StyleSpec

__all__ = ["Draft", "draft_spec", "spec_path_for"]


@dataclass
class Draft:
    path: Path
    spec: StyleSpec
    proposal: Proposal
    rules: list[DraftRule]
    seed_problems: list[str] = field(default_factory=list)  # "file:line: problem"
    calls_path: Path | None = None
    chats: int = 0  # seed chats measured

    @property
    def dropped(self) -> list[DraftRule]:
        return [d for d in self.rules if d.broken_by]


def spec_path_for(seeds: Path) -> Path:
    """Where generate looks for the spec of these seeds: <stem>.style.toml beside them."""
    return seeds.with_name(f"{seeds.name.removesuffix('.jsonl')}.style.toml")


def draft_spec(
    seeds: Path,
    teacher: str | None = None,
    *,
    force: bool = False,
    base_url: str | None = None,
    outputs: Path | None = None,
) -> Draft:
    """Draft, check and write <stem>.style.toml beside `seeds`; refuses to overwrite an
    existing spec unless `force` (checked before any model call)."""
    path = spec_path_for(seeds)
    if not seeds.exists():
        raise UsageError(f"{seeds}: seeds file not found; pass --seeds PATH")
    if path.exists() and not force:
        raise UsageError(
            f"{path}: a style spec is already there; edit it, or pass --force to draft over it"
        )
    stem = seeds.name.removesuffix(".jsonl")
    business = business_name(seeds)
    measured = measure(seeds, business)
    calls_path = (outputs or runs.OUTPUTS) / stem / "calls.sqlite"
    proposal = ask_teacher(seeds, measured, business, teacher, calls_path, base_url)
    rules = _vetted_rules(seeds, measured, proposal)
    text = _text(seeds, stem, measured, proposal, rules)
    try:
        spec = StyleSpec.from_dict(tomllib.loads(text), source=str(path))
    except (tomllib.TOMLDecodeError, ConfigError) as e:  # a bug here, not the user's
        raise ConfigError(f"{path}: the draft does not load ({e}); please report it") from None
    atomic_write_text(path, text)
    used = calls_path if proposal.spec is not None else None
    problems = seed_problems(seeds, measured, spec)
    return Draft(path, spec, proposal, rules, problems, used, len(measured.chats))


def _vetted_rules(seeds: Path, m: Measured, p: Proposal) -> list[DraftRule]:
    """Measured stock rules, then the teacher's, each with the seeds that break it."""
    n = sum(len(c.replies) for c in m.chats)
    out = [DraftRule(r, f"measured: none of the {n} seed replies break it") for r in m.rules]
    names = {r.name for r in m.rules}
    for proposed in p.spec.rules if p.spec else []:
        rule = proposed.to_rule()
        if rule.name in names:
            continue
        names.add(rule.name)
        broken = [c.line for c in m.chats if any(rule.check(r) is not None for r in c.replies)]
        origin = f"proposed by {p.teacher}" + ("" if broken else "; every seed reply keeps it")
        out.append(DraftRule(rule, origin, broken))
    return out


def _text(seeds: Path, stem: str, m: Measured, p: Proposal, rules: list[DraftRule]) -> str:
    by = f"proposed by {p.teacher}"
    s = p.spec
    header = (
        f"Drafted by `distill init` from {seeds.name} on {date.today()}, for you to edit.\n"
        'Each part says how it was found: "measured" from the seeds, or "proposed by" a model.\n'
        f"Check it on your seeds with: distill validate {seeds} --style "
        f"{spec_path_for(seeds)}\n"
        'A rule may also be a sentence a judge model rules on: rubric = "offers a next step".'
    )
    prompt_origin = f"system prompt: {m.system_prompt_source}"
    prompt = m.system_prompt
    if s is not None and m.system_prompt_source.startswith("drafted"):
        prompt, prompt_origin = s.system_prompt, f"system prompt: {by} (the seeds have none)"
    lo, hi = m.words
    return spec_text(
        seeds.name,
        header,
        stem,
        Part(prompt, prompt_origin),
        Part(
            " ".join(s.description.split()) if s else "",
            f"description: {by}; the teacher reads it, so make it true"
            if s
            else "description: EDIT ME: two or three sentences on what the business sells and "
            "how support talks (the teacher reads this)",
        ),
        Part(
            {"min_words": m.min_words, "max_words": m.max_words, "max_sentences": m.max_sentences},
            f"measured: the seed replies run {lo}-{hi} words, at most {m.sentences} sentence(s); "
            "the limits sit a little outside that",
        ),
        rules,
        Part(
            " ".join(s.scope.split()) if s else "",
            f"scope: {by}" if s else "scope: EDIT ME: what customers may ask about",
        ),
        Part(
            {
                "topics": s.topics if s else [],
                "personas": s.personas if s else [],
                "intents": s.intents if s else [],
            },
            f"topics, personas, intents: {by}; edit freely"
            if s
            else "topics, personas, intents: empty, so generate asks its teacher for them (and\n"
            "records them in the run); list your own here to choose",
        ),
        Part(m.turns, "turns: measured: exchanges per seed chat, in the seeds' proportions"),
    )


def seed_problems(seeds: Path, m: Measured, spec: StyleSpec) -> list[str]:
    """Every way a seed breaks the written spec, as `distill validate --style` sees it."""
    out = []
    for c in m.chats:
        if c.system is not None and c.system != spec.system_prompt:
            out.append(f"{seeds}:{c.line}: its system prompt differs from the draft's")
        for i, reply in enumerate(c.replies, 1):
            out += [f"{seeds}:{c.line}: reply {i}: {p}" for p in spec.check_reply(reply)]
    return out
