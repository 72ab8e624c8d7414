"""distill.toml: defaults for any command's flags, one table per command.

    [generate]
    teacher = "openai:gpt-4o"
    n = 300

Precedence: flags > DISTILL_<COMMAND>_<FLAG> environment variables > distill.toml > built-in
defaults. A key that is not a flag of its command is an error, so a typo never passes silently.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import click

from distill.errors import ConfigError

CONFIG_FILE = "distill.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    p = path or Path(os.environ.get("DISTILL_CONFIG", CONFIG_FILE))
    if not p.exists():
        return {}
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{p}: {section}: expected a [{section}] table of flag defaults")
    return data


def check_against(
    group: click.Group, ctx: click.Context, data: dict[str, Any], source: str
) -> dict[str, Any]:
    """Validate sections and keys against the commands' own parameters; return a default_map."""
    out: dict[str, Any] = {}
    for section, values in data.items():
        cmd = group.get_command(ctx, section)
        if cmd is None:
            raise ConfigError(
                f"{source}: [{section}]: unknown command; use one of {', '.join(group.list_commands(ctx))}"
            )
        names = {p.name for p in cmd.params if p.name}
        for key in values:
            if key.replace("-", "_") not in names:
                raise ConfigError(
                    f"{source}: [{section}] {key}: unknown key; `distill {section} --help` lists the flags"
                )
        out[section] = {k.replace("-", "_"): v for k, v in values.items()}
    return out
