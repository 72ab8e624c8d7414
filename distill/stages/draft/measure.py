"""What the seeds say about the voice without asking any model: the system prompt they use,
how long their replies run, how many exchanges a chat has, and which stock rules every
reply already keeps."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import InputError
from distill.runs import jsonl_lines, parse_jsonl_line
from distill.style import Rule, count_sentences, count_words


@dataclass
class SeedChat:
    """One seed line: where it is, its system prompt (if any) and its assistant replies."""

    line: int
    system: str | None
    replies: list[str]
    exchanges: int


@dataclass
class Measured:
    chats: list[SeedChat]
    system_prompt: str
    system_prompt_source: str  # "the seeds (N of M)" or "drafted: the seeds have none"
    min_words: int
    max_words: int
    max_sentences: int
    turns: list[int]
    words: tuple[int, int]  # the seeds' own shortest and longest reply, in words
    sentences: int  # the seeds' own most sentences in one reply
    rules: list[Rule] = field(default_factory=list)


# Rules most voices want; each is written only when no seed reply breaks it.
STOCK_RULES = [
    Rule(
        name="no-markdown",
        why="plain chat text: no markdown (**, #, `, bullet lists)",
        must_not_match=r"(\*\*|__|`|^\s*#|^\s*[-*•]\s|^\s*\d+\.\s)",
    ),
    Rule(
        name="no-ai-talk",
        why="never talks about being an AI or a language model",
        must_not_match=r"(?i)\b(as an ai|language model|i am an ai|i'm an ai|openai|chatgpt)\b",
    ),
    Rule(
        name="no-links",
        why="no web addresses in a reply",
        must_not_match=r"(?i)(https?://|www\.)",
    ),
    Rule(
        name="no-emoji",
        why="no emoji",
        must_not_match=r"[\U0001F300-\U0001FAFF\u2600-\u27BF]",
    ),
]


def load_chats(path: Path) -> list[SeedChat]:
    """Every seed line as a SeedChat; InputError naming file:line on a line that is no chat."""
    chats = []
    for lineno, line, _ in jsonl_lines(path):  # real line numbers, blank lines counted
        rec = parse_jsonl_line(path, lineno, line)
        msgs = rec.get("messages") if isinstance(rec, dict) else None
        if not isinstance(msgs, list) or not msgs:
            raise InputError(f'{path}:{lineno}: expected {{"messages": [...]}} (chat format)')
        system = next(
            (str(m.get("content") or "") for m in msgs if m.get("role") == "system"), None
        )
        replies = [
            str(m.get("content") or "")
            for m in msgs
            if m.get("role") == "assistant" and m.get("content")
        ]
        if not replies:
            raise InputError(f"{path}:{lineno}: no assistant reply to learn the voice from")
        exchanges = sum(1 for m in msgs if m.get("role") == "user")
        chats.append(SeedChat(lineno, system, replies, max(1, min(exchanges, 20))))
    if not chats:
        raise InputError(f"{path}: no seed conversations; add some chat-format lines")
    return chats


def measure(path: Path, business: str) -> Measured:
    """The measured parts of a draft spec for the seeds at `path`."""
    chats = load_chats(path)
    replies = [r for c in chats for r in c.replies]
    words = [count_words(r) for r in replies]
    sentences = [count_sentences(r) for r in replies]
    prompts = Counter(c.system for c in chats if c.system)
    if prompts:
        prompt, n = prompts.most_common(1)[0]
        source = f"the most common one in the seeds ({n} of {len(chats)} chats)"
    else:
        prompt = f"You are {business} Support: friendly, brief and helpful."
        source = "drafted: the seeds have no system prompt; put your own here"
    return Measured(
        chats=chats,
        system_prompt=prompt,
        system_prompt_source=source,
        min_words=max(1, math.floor(min(words) * 0.75)),
        max_words=max(words) + max(5, math.ceil(max(words) * 0.2)),
        max_sentences=max(sentences) + 1,
        turns=turn_mix([c.exchanges for c in chats]),
        words=(min(words), max(words)),
        sentences=max(sentences),
        rules=[r for r in STOCK_RULES if all(r.check(text) is None for text in replies)],
    )


def turn_mix(counts: list[int]) -> list[int]:
    """The seeds' exchanges per chat as a short list with the same proportions
    ([1, 1, 1, 2, 2, 3] stays; 40 ones and 20 twos become [1, 1, 2])."""
    tally = Counter(counts)
    g = math.gcd(*tally.values())
    mix = sorted(t for t, n in tally.items() for _ in range(n // g))
    while len(mix) > 12:  # keep it readable: thin out evenly
        mix = mix[::2]
    return mix or [1]


def business_name(path: Path) -> str:
    """A readable name from the seeds' file name: acme-bikes.jsonl -> Acme Bikes."""
    stem = path.name.removesuffix(".jsonl")
    return " ".join(w.capitalize() for w in re.split(r"[-_.\s]+", stem) if w) or "Our"
