"""Writing a chat in one call: the teacher sees a few seeds (the closest to the topic first)
and writes the whole conversation as a typed object; a chat that breaks the style or copies a
seed it was shown is sent back with the reason."""

from __future__ import annotations

from distill.backends.base import InvalidOutput
from distill.stages.generate.chats import ConversationTypes
from distill.stages.generate.outcomes import Outcome, exchanges_of
from distill.stages.generate.plan import PlanPoint, call_seed
from distill.stages.generate.prompts import build_messages, chat_reask
from distill.stages.generate.seeds import Seed
from distill.stages.generate.teacher import Teacher
from distill.stages.generate.voice import copied_example
from distill.style import StyleSpec


def max_tokens_for(turns: int) -> int:
    return 80 + 160 * turns


class WholeChat:
    def __init__(
        self,
        spec: StyleSpec,
        seeds: list[Seed],
        teacher: Teacher,
        types: ConversationTypes,
        *,
        examples: int,
        reasks: int,
        seed: int,
        shared: bool = False,
    ) -> None:
        self.spec, self.seeds, self.teacher, self.types = spec, seeds, teacher, types
        self.examples, self.reasks, self.seed = examples, reasks, seed
        self.shared = shared  # the same seeds in every request (prompts.build_messages)

    async def write(self, point: PlanPoint) -> Outcome:
        messages, shown = build_messages(
            self.spec, self.seeds, point, self.examples, shared=self.shared
        )
        try:
            reply = await self.teacher.ask(
                messages,
                self.types.get(point.turns, point.topic),
                max_tokens=max_tokens_for(point.turns),
                seed=call_seed(self.seed, point),
                reasks=self.reasks,
                wording=chat_reask,
                check=lambda chat: copied_example(chat, shown),
                history=False,  # whole chats are long: only the last one goes back
            )
        except InvalidOutput as e:
            return Outcome(point, e.usage.attempts, raw=e.raw, error=str(e))
        return Outcome(point, reply.usage.attempts, exchanges_of(reply.value))
