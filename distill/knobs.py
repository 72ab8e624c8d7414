"""A command's options as a dataclass: each field's default and help are the flag's too, so a
default is written once (the CLI, distill.toml and the manifest all read it from the field)."""

from __future__ import annotations

from dataclasses import MISSING, Field, field, fields
from typing import Any


def knob(
    default: Any = MISSING,
    help: str = "",
    *,
    flag: bool = True,
    record: bool = True,
    default_factory: Any = MISSING,
) -> Any:
    """A dataclass field with its flag's help. `flag=False`: not a command-line flag (set by
    code); `record=False`: left out of the manifest's copy of the options."""
    meta = {"help": help, "flag": flag, "record": record}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_fields(cls: Any) -> list[Field[Any]]:
    """The fields that are command-line flags, in order."""
    return [f for f in fields(cls) if f.metadata.get("flag", True)]


def recorded(options: Any) -> dict[str, Any]:
    """The options as the manifest keeps them."""
    return {f.name: getattr(options, f.name) for f in fields(options) if f.metadata.get("record")}
