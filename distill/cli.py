"""The `distill` command: a thin shell over the library. Each command lives in
distill/commands/<name>.py and is imported only when used, so `distill --help` is fast."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from distill.errors import DistillError

COMMANDS = {
    "init": "distill.commands.init:init",
    "validate": "distill.commands.validate:validate",
    "generate": "distill.commands.generate:generate",
    "import": "distill.commands.import_:import_",
    "dedupe": "distill.commands.dedupe:dedupe",
    "split": "distill.commands.split:split",
    "review": "distill.commands.review:review",
    "pairs": "distill.commands.pairs:pairs",
    "train": "distill.commands.train:train",
    "eval": "distill.commands.evaluate:eval_",
    "improve": "distill.commands.improve:improve",
    "status": "distill.commands.status:status",
    "run": "distill.commands.run:run",
    "export": "distill.commands.export:export",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            if os.environ.get("DISTILL_DEBUG"):
                raise
            reason = str(e)

            @click.command(name=name, help=f"(unavailable: {reason})")
            def unavailable() -> None:
                raise click.ClickException(
                    f"command {name!r} is not available in this build: {reason}"
                )

            return unavailable

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DistillError as e:
            if os.environ.get("DISTILL_DEBUG"):
                raise
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            if os.environ.get("DISTILL_DEBUG"):
                raise
            click.echo(
                "Interrupted; finished work is saved. Rerun the same command to resume.", err=True
            )
            ctx.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # a bug or an unforeseen input: still one line, never a traceback
            if os.environ.get("DISTILL_DEBUG"):
                raise
            click.echo(
                f"Error: unexpected {type(e).__name__}: {e}; finished work is saved. Rerun with "
                "DISTILL_DEBUG=1 to see the traceback, and please report it.",
                err=True,
            )
            ctx.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="distill")
def cli() -> None:
    """Distil a big model's behaviour into a small one.

    generate -> dedupe -> split -> review -> train -> eval, or `distill run` for all of them.
    Set DISTILL_DEBUG=1 to see tracebacks.
    """


def main() -> None:
    try:
        cli(standalone_mode=True, auto_envvar_prefix="DISTILL", default_map=_default_map())
    except DistillError as e:  # raised outside a command (rare)
        if os.environ.get("DISTILL_DEBUG"):
            raise
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)


def _default_map() -> dict[str, Any]:
    """Flag defaults from distill.toml, checked against the commands' own flags."""
    from distill.config import CONFIG_FILE, check_against, load_config

    data = load_config()
    if not data:
        return {}
    source = os.environ.get("DISTILL_CONFIG", CONFIG_FILE)
    with click.Context(cli) as ctx:
        return check_against(cli, ctx, data, source)


if __name__ == "__main__":
    main()
