"""The third way of writing a chat: the customer's side is given (--prompts), the teacher
writes the reply under the spec's system prompt, typed and re-asked like role-play's replies."""

from __future__ import annotations

import json

from pydantic import ValidationError

from distill.backends.base import InvalidOutput, first_error
from distill.stages.generate.chats import ConversationTypes, reply_type
from distill.stages.generate.customers import CustomerPrompt
from distill.stages.generate.outcomes import Outcome, exchanges_of
from distill.stages.generate.plan import PlanPoint, call_seed
from distill.stages.generate.prompts import reply_reask
from distill.stages.generate.roleplay import REPLY_TOKENS
from distill.stages.generate.teacher import Teacher
from distill.style import StyleSpec


class Answer:
    def __init__(
        self,
        spec: StyleSpec,
        prompts: list[CustomerPrompt],
        teacher: Teacher,
        types: ConversationTypes,
        *,
        reasks: int,
        seed: int,
    ) -> None:
        self.spec, self.prompts, self.teacher, self.types = spec, prompts, teacher, types
        self.reasks, self.seed = reasks, seed
        self.reply_type = reply_type(spec, types.reply_pattern)

    async def write(self, point: PlanPoint) -> Outcome:
        assert point.prompt is not None
        history = self.prompts[point.prompt].chat()
        system = {"role": "system", "content": self.spec.system_prompt}
        try:
            got = await self.teacher.ask(
                [system, *history],
                self.reply_type,
                max_tokens=REPLY_TOKENS,
                seed=call_seed(self.seed, point),
                reasks=self.reasks,
                wording=reply_reask,
            )
        except InvalidOutput as e:
            return Outcome(point, e.usage.attempts, raw=e.raw, error=f"reply: {e}")
        chat = [*history, {"role": "assistant", "content": got.value.reply.strip()}]
        pairs = [
            {"user": u["content"], "assistant": a["content"]}
            for u, a in zip(chat[::2], chat[1::2], strict=True)
        ]
        try:
            checked = self.types.get(point.turns).model_validate({"exchanges": pairs})
        except ValidationError as e:
            return Outcome(point, got.usage.attempts, raw=json.dumps(pairs), error=first_error(e))
        return Outcome(point, got.usage.attempts, exchanges_of(checked))
