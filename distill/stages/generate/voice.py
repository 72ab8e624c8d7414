"""Checks on what the teacher wrote beyond the spec's reply rules: each side speaks as itself
(the spec's [roles] phrases), no narration, no loops or repeats, on topic, no copied seed."""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any

from distill.quality import language_problem
from distill.stages.generate.plan import topic_keys
from distill.style import Roles, StyleSpec, count_words

if TYPE_CHECKING:
    from distill.stages.generate.seeds import Seed

_AGENT_APOLOGY = re.compile(
    r"(?i)^\W*(i'm (really |so )?sorry|so sorry|sorry)[^.!?]*\b(i'll|i've|we'll|we've)\b"
)
_LOOP = re.compile(r"(?i)\b(\w+)(\W+\1\b){2,}")
_NARRATION = re.compile(r"(?i)\bthe (customer|assistant|support agent)\b")


@cache
def _phrases(phrases: tuple[str, ...]) -> re.Pattern[str] | None:
    if not phrases:
        return None
    return re.compile(r"(?i)\b(" + "|".join(re.escape(p) for p in phrases) + r")\b")


def says_customer_phrase(roles: Roles, text: str) -> str | None:
    """A phrase only the customer says, found in `text`, or None."""
    pattern = _phrases(tuple(roles.customer_says))
    m = pattern.search(text) if pattern else None
    return m.group(0) if m else None


def says_agent_phrase(roles: Roles, text: str) -> bool:
    pattern = _phrases(tuple(roles.agent_says))
    return bool(pattern and pattern.search(text))


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def reply_problems(spec: StyleSpec, reply: str) -> list[str]:
    """Every way an assistant reply breaks the spec or speaks out of role."""
    problems = list(spec.check_reply(reply))
    if bad := language_problem(reply, spec.quality.language):
        problems.append(bad)
    if said := says_customer_phrase(spec.roles, reply):
        problems.append(f"role-swap: the reply talks like the customer ({said!r})")
    if _NARRATION.search(reply):
        problems.append("narrates ('the customer ...') instead of replying")
    if m := _LOOP.search(reply):
        problems.append(f"repeats itself ({m.group(0)!r})")
    return problems


def customer_problem(roles: Roles, message: str) -> str | None:
    """Why a customer message does not read as the customer's, or None."""
    if count_words(message) < 3:
        return "the customer's message needs at least 3 words"
    if (
        _NARRATION.search(message)
        or _AGENT_APOLOGY.search(message)
        or says_agent_phrase(roles, message)
    ):
        return "write as the customer, to the support agent"
    return None


def conversation_problems(
    spec: StyleSpec, exchanges: list[Any], topic: str | None = None
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
        if says_agent_phrase(spec.roles, user):
            problems.append(
                f"exchange {i}: role-swap: the customer's message talks like the support agent"
            )
        if said := says_customer_phrase(spec.roles, reply):
            problems.append(
                f"exchange {i}: role-swap: the assistant reply talks like the customer "
                f"({said!r}); the assistant is the support agent"
            )
        if _NARRATION.search(user) or _NARRATION.search(reply):
            problems.append(
                f"exchange {i}: narrates ('the customer ...') instead of writing the chat itself"
            )
        for who, text in (("customer", user), ("reply", reply)):
            if bad := language_problem(text, spec.quality.language):
                problems.append(f"exchange {i} {who}: {bad}")
        said_words = words(reply)
        if any(len(said_words & w) / len(said_words | w) >= 0.6 for w in seen if said_words | w):
            problems.append(f"exchange {i}: repeats an earlier reply")
        seen.append(said_words)
        problems.extend(f"exchange {i} reply: {p}" for p in spec.check_reply(reply))
    if topic and (keys := topic_keys(topic)):
        text = " ".join(f"{e.user} {e.assistant}" for e in exchanges).lower()
        if not any(k in text for k in keys):
            problems.append(f"off-topic: the chat must be about {topic!r}")
    return problems


@cache
def _seed_words(text: str) -> frozenset[str]:
    """A seed message's words, computed once per message (every request shows a few seeds)."""
    return frozenset(words(text))


def copied_example(value: Any, examples: list[Seed], threshold: float = 0.7) -> str | None:
    """A problem message when a turn (nearly) copies a shown example: 70 % or more of its
    words shared (Jaccard) with a message of the example."""
    shown = [
        _seed_words(p[k]) for s in examples for p in s.exchanges for k in ("user", "assistant")
    ]
    for i, ex in enumerate(value.exchanges, 1):
        for text in (ex.user, ex.assistant):
            mine = words(text)
            for other in shown:
                if mine and other and len(mine & other) / len(mine | other) >= threshold:
                    return f"exchange {i} copies an example chat; write a new one for the topic"
    return None
