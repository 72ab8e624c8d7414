"""Writing a chat one turn at a time, for small teachers that cannot write a whole chat: the
teacher writes each customer message as the customer, then answers it as the assistant under
the spec's system prompt (typed, and re-asked like a whole chat)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from distill.backends.base import InvalidOutput, first_error
from distill.stages.generate.chats import (
    ConversationTypes,
    customer_text,
    customer_type,
    reply_type,
)
from distill.stages.generate.outcomes import Outcome, exchanges_of
from distill.stages.generate.plan import PlanPoint, call_seed
from distill.stages.generate.prompts import customer_request, reply_reask
from distill.stages.generate.teacher import Teacher
from distill.style import StyleSpec

CUSTOMER_TOKENS = 160
REPLY_TOKENS = 120


class RolePlay:
    def __init__(
        self, spec: StyleSpec, teacher: Teacher, types: ConversationTypes, *, reasks: int, seed: int
    ) -> None:
        self.spec, self.teacher, self.types = spec, teacher, types
        self.reasks, self.seed = reasks, seed
        self.reply_type = reply_type(spec, types.reply_pattern)
        self._customer_types: dict[str | None, type[BaseModel]] = {}

    def _customer_type(self, point: PlanPoint) -> type[BaseModel]:
        topic = point.topic if self.types.topic_check else None
        if topic not in self._customer_types:
            self._customer_types[topic] = customer_type(topic, self.spec.roles)
        return self._customer_types[topic]

    async def write(self, point: PlanPoint) -> Outcome:
        seed = call_seed(self.seed, point)
        system = {"role": "system", "content": self.spec.system_prompt}
        history: list[dict[str, Any]] = []
        attempts = 0
        for turn in range(point.turns):
            step = f"exchange {turn + 1} customer"
            try:
                said = await self.teacher.ask(
                    customer_request(self.spec, point, history),
                    self._customer_type(point),
                    max_tokens=CUSTOMER_TOKENS,
                    seed=seed + turn,
                )
                attempts += said.usage.attempts
                user = {"role": "user", "content": customer_text(said.value.message)}
                step = f"exchange {turn + 1} reply"
                got = await self.teacher.ask(
                    [system, *history, user],
                    self.reply_type,
                    max_tokens=REPLY_TOKENS,
                    seed=seed + turn,
                    reasks=self.reasks,
                    wording=reply_reask,
                )
            except InvalidOutput as e:
                return Outcome(point, attempts + e.usage.attempts, raw=e.raw, error=f"{step}: {e}")
            attempts += got.usage.attempts
            history += [user, {"role": "assistant", "content": got.value.reply.strip()}]
        pairs = [
            {"user": u["content"], "assistant": a["content"]}
            for u, a in zip(history[::2], history[1::2], strict=True)
        ]
        try:
            chat = self.types.get(point.turns, point.topic).model_validate({"exchanges": pairs})
        except ValidationError as e:
            raw = json.dumps({"exchanges": pairs})
            return Outcome(point, attempts, raw=raw, error=first_error(e))
        return Outcome(point, attempts, exchanges_of(chat))
