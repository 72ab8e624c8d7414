"""generate: expand a few seed conversations into n varied, style-consistent ones.

A plan puts each example on a point of the style spec's axes (plan.py); for each point the
teacher writes a chat, whole (whole_chat.py) or a turn at a time (roleplay.py), as a typed
object whose validators carry the voice (chats.py, voice.py), re-asked with the reason when
it breaks them (teacher.py). Every attempt goes through calls.sqlite and every outcome is
appended to generated.jsonl or rejected.jsonl (worker.py), so a rerun after a crash re-sends
nothing that finished and skips every plan point already accounted for (stage.py).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it; imported on first use, so `distill --help` (which reads
# the generate command's flags from options.py) does not load the whole stage
_WHERE = {
    "ConversationTypes": "chats",
    "customer_type": "chats",
    "reply_type": "chats",
    "DryRun": "estimate",
    "dry_run": "estimate",
    "teacher_line": "estimate",
    "reply_pattern": "grammar",
    "GenerateOptions": "options",
    "PLAN_LIMIT": "options",
    "reject_reasons": "outcomes",
    "PlanPoint": "plan",
    "make_plan": "plan",
    "Progress": "progress",
    "build_messages": "prompts",
    "Seed": "seeds",
    "load_seeds": "seeds",
    "GenerateResult": "stage",
    "generate": "stage",
    "NothingAccepted": "stage",
    "STAGE": "teacher",
    "copied_example": "voice",
}
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
