"""Options several commands share, and flags made from an options dataclass (distill.knobs)."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import MISSING
from pathlib import Path
from typing import Any, TypeVar

import click

from distill.knobs import flag_fields

F = TypeVar("F", bound=Callable[..., Any])

run_option = click.option(
    "--run",
    "run_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Run folder (default: the current run, the last one generated).",
)


def flags_from(cls: type) -> Callable[[F], F]:
    """One click option per flag field of `cls`: `--field-name`, typed like the field, with
    the field's default and help (a `bool | None` field is an on/off pair defaulting to None)."""
    hints = typing.get_type_hints(cls)

    def decorate(fn: F) -> F:
        for f in reversed(flag_fields(cls)):
            fn = _option(f.name, hints[f.name], f.default, f.metadata["help"])(fn)
        return fn

    return decorate


def _option(name: str, hint: Any, default: Any, help: str) -> Callable[[F], F]:
    base = _without_none(hint)
    flag = "--" + name.replace("_", "-")
    if default is MISSING:
        return click.option(flag, type=_click_type(base), required=True, help=help)
    if base is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", default=default, help=help)
    return click.option(
        flag, type=_click_type(base), default=default, show_default=default is not None, help=help
    )


def _without_none(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _click_type(base: Any) -> Any:
    if base is Path:
        return click.Path(path_type=Path, dir_okay=False)
    return base
