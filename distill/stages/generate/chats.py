"""The teacher's typed outputs: a whole conversation, and (role-play) one customer message or
one assistant reply. Their validators carry the spec's rules and the voice checks, so a reply
that breaks them is re-asked with the reason."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from distill.stages.generate.grammar import topic_pattern
from distill.stages.generate.voice import conversation_problems, customer_problem, reply_problems
from distill.style import Roles, StyleSpec


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


def _message_type(
    title: str,
    doc: str,
    name: str,
    description: str,
    pattern: str | None,
    problems: Callable[[str], list[str]],
) -> type[BaseModel]:
    """An object with one text field `name`, valid when `problems(text)` finds none; the
    pattern (if any) goes into the schema only, for constrained decoding."""
    extra: Any = {"pattern": pattern} if pattern else None

    def voice(self: Any) -> Any:
        found = problems(getattr(self, name).strip())
        if found:
            raise ValueError("; ".join(found[:3]))
        return self

    validators: dict[str, Any] = {"_voice": model_validator(mode="after")(voice)}
    text: Any = (str, Field(description=description, json_schema_extra=extra))
    return create_model(
        title,
        __doc__=doc,
        __config__=ConfigDict(extra="forbid", title=title),
        __validators__=validators,
        **{name: text},
    )


def reply_type(spec: StyleSpec, pattern: str | None = None) -> type[BaseModel]:
    """One assistant reply (role-play mode): the spec's rules and the voice checks as
    validators, the seeds' pattern (if any) in the schema for constrained decoding."""
    return _message_type(
        "Reply",
        "The support assistant's reply.",
        "reply",
        "the support assistant's reply",
        pattern,
        lambda text: reply_problems(spec, text),
    )


def customer_type(topic: str | None = None, roles: Roles | None = None) -> type[BaseModel]:
    """The customer's message (role-play mode), not in the agent's words (`roles`, else the
    generic ones). With a topic, the schema's pattern makes a constrained model mention it
    (one of the topic's word stems)."""
    said = roles or Roles()

    def problems(text: str) -> list[str]:
        problem = customer_problem(said, text)
        return [problem] if problem else []

    return _message_type(
        "CustomerMessage",
        "The customer's next chat message.",
        "message",
        "the customer's message",
        topic_pattern(topic),
        problems,
    )


def customer_text(raw: str) -> str:
    """A customer's chat message from free text: first line, at most two sentences."""
    text = raw.strip().strip('"').split("\n")[0].strip().strip('"')
    parts = re.split(r"(?<=[.!?])\s+", text)
    return " ".join(parts[:2])[:300]
