"""Options several commands share."""

from __future__ import annotations

from pathlib import Path

import click

run_option = click.option(
    "--run",
    "run_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Run folder (default: the current run, the last one generated).",
)
