"""The records every stage passes along: Message, Conversation, Example."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool", "function"]


class Message(BaseModel):
    """One chat message in OpenAI's fine-tuning format."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None
    weight: Literal[0, 1] | None = None

    def to_chat(self) -> dict[str, Any]:
        """The message as OpenAI expects it: unset keys left out."""
        return self.model_dump(exclude_none=True)


class Conversation(BaseModel):
    """A list of messages: the unit a model is trained on."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1)

    def system_prompt(self) -> str | None:
        first = self.messages[0]
        return first.content if first.role == "system" else None

    def replies(self) -> list[str]:
        """Assistant texts, in order."""
        return [m.content or "" for m in self.messages if m.role == "assistant"]

    def to_chat(self) -> dict[str, Any]:
        return {"messages": [m.to_chat() for m in self.messages]}


def content_id(messages: list[Message] | list[dict[str, Any]]) -> str:
    """A stable id from the conversation's content: same messages, same id, on any machine."""
    plain = [m.to_chat() if isinstance(m, Message) else m for m in messages]
    blob = json.dumps(plain, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class Example(Conversation):
    """A conversation with a content-hash id and free-form metadata (topic, source, ...)."""

    id: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        if not self.id:
            self.id = content_id(self.messages)

    @classmethod
    def from_chat(cls, obj: dict[str, Any], **meta: Any) -> Example:
        """Build from a chat-format dict ({"messages": [...]}, maybe with id/meta)."""
        merged = {**obj.get("meta", {}), **meta}
        return cls(messages=obj["messages"], id=obj.get("id", ""), meta=merged)

    def to_record(self) -> dict[str, Any]:
        """The line written to generated.jsonl / deduped.jsonl."""
        return {"id": self.id, "messages": [m.to_chat() for m in self.messages], "meta": self.meta}
