"""distill.toml: defaults for any command's flags, one table per command.

    [generate]
    teacher = "openai:gpt-4o"
    n = 300

Precedence: flags > DISTILL_<COMMAND>_<FLAG> environment variables > distill.toml > built-in
defaults. A key that is not a flag of its command is an error, so a typo never passes silently.

`distill run` drives the stages itself, so it resolves each stage's flags here: the stage's own
settings (DISTILL_<STAGE>_*, [stage]) as `distill <stage>` would see them, combined with run's
(its flags, DISTILL_RUN_*, [run]) by `combine`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

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


# Where a value came from, most specific first.
FLAG, ENV, TOML, DEFAULT = 0, 1, 2, 3
_LAYER = {
    ParameterSource.COMMANDLINE: FLAG,
    ParameterSource.PROMPT: FLAG,
    ParameterSource.ENVIRONMENT: ENV,
    ParameterSource.DEFAULT_MAP: TOML,
}
Layered = dict[str, tuple[Any, int]]  # flag name -> (value, layer)


def layered_params(ctx: click.Context) -> Layered:
    """A parsed context's values, each with the layer it came from."""
    return {
        name: (value, _LAYER.get(ctx.get_parameter_source(name), DEFAULT))  # type: ignore[arg-type]
        for name, value in ctx.params.items()
    }


def stage_settings(
    root: click.Context, command: click.Command, name: str, args: list[str]
) -> Layered:
    """The flags `distill <name> ARGS` would get from DISTILL_<NAME>_* and distill.toml's
    [name] table (through the root context's default map and env prefix), with their layers."""
    with command.make_context(name, list(args), parent=root) as ctx:
        return layered_params(ctx)


def combine(run: Layered, stage: Layered) -> Layered:
    """One stage's flags under `distill run`: per flag, the more specific layer wins (a flag
    beats an environment variable beats distill.toml beats a default); at the same layer run's
    own setting (--n, DISTILL_RUN_N, [run] n) beats the stage's (DISTILL_GENERATE_N,
    [generate] n). When neither was set, run's default applies if it has one (not None)."""
    out: Layered = {}
    for key, (value, layer) in stage.items():
        if key not in run:
            out[key] = (value, layer)
            continue
        r_value, r_layer = run[key]
        if r_layer < DEFAULT and r_layer <= layer:
            out[key] = (r_value, r_layer)
        elif layer < DEFAULT:
            out[key] = (value, layer)
        else:
            out[key] = (value if r_value is None else r_value, DEFAULT)
    return out
