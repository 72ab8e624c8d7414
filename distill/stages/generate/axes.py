"""Where the plan's axes come from: the style spec's [axes]; else those the run recorded; else
the teacher proposes them once (through calls.sqlite) and the run records them."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from distill.backends import close_backend
from distill.backends.base import Backend, InvalidOutput, cached_chat
from distill.calls import CallLog
from distill.errors import InputError
from distill.stages.generate.prompts import axes_request
from distill.stages.generate.seeds import Seed
from distill.stages.generate.teacher import STAGE
from distill.style import Axes, StyleSpec


class ProposedAxes(BaseModel):
    """Diversity axes the teacher proposes when the style spec has none."""

    model_config = ConfigDict(extra="forbid")

    topics: list[str] = Field(min_length=3, max_length=20)
    personas: list[str] = Field(min_length=2, max_length=10)
    intents: list[str] = Field(min_length=2, max_length=8)


def plan_axes(
    spec: StyleSpec,
    seeds: list[Seed],
    teacher: Backend | None,
    calls: CallLog | None,
    recorded: dict[str, Any] | None = None,
) -> tuple[Axes, str]:
    """(axes, where they came from): the spec's; else those a run recorded; else the
    teacher's proposal (once, through calls.sqlite); with no teacher, the spec's empty ones."""
    if not spec.axes.is_empty():
        return spec.axes, "spec"
    if recorded:
        return Axes(**{k: v for k, v in recorded.items() if k != "source"}), "teacher"
    if teacher is None or calls is None:
        return spec.axes, "teacher (asked when generating)"

    async def ask() -> Any:
        try:
            return await cached_chat(
                teacher,
                calls,
                STAGE,
                axes_request(spec, seeds),
                response_model=ProposedAxes,
                max_retries=2,
                temperature=0.3,
                max_tokens=800,
            )
        finally:
            await close_backend(teacher)

    try:
        proposed = asyncio.run(ask()).value
    except InvalidOutput as e:
        raise InputError(
            f"{spec.source}: the style spec has no [axes] and the teacher could not propose "
            f"them ({e}); add topics/personas/intents under [axes]"
        ) from None
    axes = Axes(
        topics=proposed.topics,
        personas=proposed.personas,
        intents=proposed.intents,
        turns=spec.axes.turns,
    )
    return axes, "teacher"
