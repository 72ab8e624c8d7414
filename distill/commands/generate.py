"""`distill generate`: expand the seeds with the teacher into outputs/<name>/ (resumable)."""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from typing import Any

import click

from distill.commands.options import flags_from
from distill.stages.generate.options import PLAN_LIMIT, GenerateOptions


@click.command()
@flags_from(GenerateOptions)
@click.option("--dry-run", is_flag=True, help="Print the plan and estimated cost; send nothing.")
def generate(dry_run: bool, **kwargs: Any) -> None:
    """Expand the seeds into varied, style-consistent conversations with the teacher."""
    from distill.stages import generate as stage

    opts = GenerateOptions(**kwargs)
    estimate = stage.dry_run(opts) if dry_run or opts.teacher is None else None
    if opts.teacher is None and estimate is not None:
        click.echo(stage.teacher_line(opts, estimate))
    if dry_run and estimate is not None:
        _print_dry_run(estimate, opts.resolved())
        return
    bar = _ProgressBar()
    try:
        with bar:
            result = stage.generate(opts, on_progress=bar.update)
    except KeyboardInterrupt:
        click.echo(
            f"Interrupted: {bar.done} of {bar.total} accepted, finished work is saved. "
            f"Resume with: {_resume_command()}",
            err=True,
        )
        sys.exit(130)
    print_summary(result)
    click.echo("Next: distill dedupe")


def print_summary(result: Any) -> None:
    """What a generate did, in a line or three (`distill run` prints the same)."""
    from distill.stages import generate as stage

    p = result.progress
    click.echo(
        f"{result.run.path}: {p.generated} of {p.total} accepted, {p.planned} planned "
        f"({p.rejected} rejected); {p.calls} calls ({p.cached} from calls.sqlite, "
        f"{p.reasks} re-asks), {p.tokens:,} tokens, ${p.cost_usd:.4f}, {result.elapsed_s:.1f} s"
    )
    if getattr(result, "rubric_note", None):
        click.echo(result.rubric_note[0].upper() + result.rubric_note[1:] + ".")
    if p.generated < p.total:
        click.echo(
            f"Only {p.generated} of {p.total} passed: the plan ran out ({PLAN_LIMIT} "
            "points per example asked for); read the reasons below, then fix the seeds or "
            "the style spec, or use a stronger --teacher"
        )
    reasons = stage.reject_reasons(result.run)
    if reasons:
        click.echo("Top rejection reasons: " + "; ".join(f"{r} ({n})" for r, n in reasons[:3]))


def _resume_command() -> str:
    return "distill " + " ".join(shlex.quote(a) for a in sys.argv[1:])


class _ProgressBar:
    """A rich progress bar on stderr: accepted/asked for, rate, ETA, tokens and dollars."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("generate"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[tokens]} tok  ${task.fields[cost]}"),
            console=console,
            disable=not console.is_terminal,
        )
        self.task = self.progress.add_task("generate", total=None, rate="", tokens=0, cost="0")
        self.done = 0
        self.total = 0
        self._first: int | None = None

    def __enter__(self) -> _ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, p: Any) -> None:
        if self._first is None:
            self._first = p.generated
        self.done, self.total = p.generated, p.total
        elapsed = self.progress.tasks[0].elapsed or 0.0
        new = p.generated - self._first
        rate = f"{new / elapsed:.2f}/s" if elapsed > 0 and new else ""
        self.progress.update(
            self.task,
            completed=p.generated,
            total=p.total,
            rate=rate,
            tokens=f"{p.tokens:,}",
            cost=f"{p.cost_usd:.4f}",
        )


def _print_dry_run(d: Any, opts: Any) -> None:
    click.echo(f"Plan: {len(d.plan)} conversations (axes from {d.axes_source}), seed {opts.seed}")
    for axis in ("topic", "persona", "intent", "turns"):
        counts = Counter(getattr(p, axis) for p in d.plan)
        click.echo(f"  {axis}: " + ", ".join(f"{k} x{v}" for k, v in counts.most_common()))
    for p in d.plan[:10]:
        click.echo(f"  #{p.plan_index}: {p.topic} | {p.persona} | {p.intent} | {p.turns} turn(s)")
    if len(d.plan) > 10:
        click.echo(f"  ... {len(d.plan) - 10} more")
    click.echo(
        f"  a rejected one is replaced by the next point, {PLAN_LIMIT * len(d.plan)} at most"
    )
    click.echo(
        f"Estimated tokens: {d.prompt_tokens:,} prompt + ~{d.completion_tokens:,} completion "
        f"(at most {d.worst_completion_tokens:,}), before re-asks (o200k count)"
    )
    if d.cost_usd is None:
        click.echo(
            f"Estimated cost: unknown (no price for {opts.teacher} in the model table; "
            "give one with --price-in and --price-out)"
        )
    else:
        click.echo(
            f"Estimated cost: ${d.cost_usd:.4f} (at most ${d.worst_cost_usd:.4f} before "
            f"re-asks) with {opts.teacher}"
        )
    click.echo("Dry run: nothing sent, nothing written.")
