"""`distill pairs`: DPO preference pairs, the teacher's reply against the student's."""

from __future__ import annotations

from typing import Any

import click

from distill.commands.options import run_option


@click.command()
@run_option
@click.option(
    "--student",
    default=None,
    help="Model whose replies are the rejected side (default: the run's trained student, "
    "else its base).",
)
@click.option(
    "--judge",
    default=None,
    help="Keep a pair only when this model prefers the teacher's reply in both orders "
    "(default: none; the margin is the style spec: chosen passes, rejected fails).",
)
@click.option("--base-url", default=None, help="An OpenAI-compatible server for openai: models.")
@click.option("--concurrency", type=int, default=8, show_default=True, help="Calls in flight.")
@click.option("--limit", type=int, default=None, help="Use only the first N train examples.")
def pairs(run_dir, **opts: Any) -> None:
    """Build pairs.jsonl (OpenAI's preference format) from train.jsonl for `train --method dpo`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from distill.runs import Run
    from distill.stages.pairs import build_pairs

    run = Run.open(run_dir)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("pairs calls", total=None)
        summary = build_pairs(
            run,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            say=lambda line: bar.console.print(line, markup=False, soft_wrap=True),
            **opts,
        )
    reasons = ", ".join(f"{n} {why}" for why, n in summary["reasons"].items()) or "none"
    click.echo(
        f"{summary['kept']} pair(s) kept of {summary['candidates']} train prompts "
        f"(margin: {summary['margin']}); dropped {summary['dropped']}: {reasons} "
        "(each in rejected.jsonl)"
    )
    click.echo(f"pairs: {summary['file']}")
    if summary["kept"]:
        click.echo(f"next: distill train --method dpo --run {run.path}")
