"""Patterns for constrained decoding (small local teachers): they steer a tiny model into the
voice the seeds show; the validators still judge what it writes."""

from __future__ import annotations

import re

from distill.stages.generate.plan import topic_keys
from distill.stages.generate.seeds import Seed
from distill.style import StyleSpec

_MARKDOWN_PROBES = {"*": "**x**", "#": "# x", "`": "`x`", "_": "__x__"}
_CHAT_CHARS = "A-Za-z0-9 ,.!?'£€$%&()/:;+=-"


def reply_pattern(spec: StyleSpec, seeds: list[Seed]) -> str | None:
    """A regex that writes replies the way the seeds' replies go: an opening from the seeds
    (one the spec's first-sentence rules accept), then a sentence starting with a seed's
    next-step word (one the spec's must-match rules accept), then at most the spec's
    remaining sentences, without the characters the spec forbids (markdown). None when the
    seeds give no usable opening."""
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


def topic_pattern(topic: str | None) -> str | None:
    """A customer message that names the topic (one of its word stems), or None."""
    keys = topic_keys(topic) if topic else []
    if not keys:
        return None
    c = _CHAT_CHARS
    return f"[{c}]{{0,60}}({'|'.join(keys)})[{c}]{{2,120}}"
