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
@click.option(
    "--attach", is_flag=True, help="With --batch: follow the run's batches and collect them."
)
@click.option("--cancel", is_flag=True, help="With --batch: cancel the run's running batches.")
def generate(dry_run: bool, attach: bool, cancel: bool, **kwargs: Any) -> None:
    """Expand the seeds into varied, style-consistent conversations with the teacher."""
    from distill.stages import generate as stage

    opts = GenerateOptions(**kwargs)
    if attach or cancel:
        _batch_action(opts, attach, cancel)
        if cancel:
            return
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
        if opts.batch:
            from distill.runs import OUTPUTS, Run
            from distill.stages.generate.batch import detach_note

            run = Run((opts.outputs or OUTPUTS) / opts.run_name())
            click.echo(detach_note(run, sys.argv[1:]), err=True)
            sys.exit(130)
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
    if p.prompt_tokens and (
        p.prompt_cached
        or str(result.run.stage("generate").get("teacher", "")).startswith("openai:")
    ):
        click.echo(
            f"Prompt cache: {p.prompt_cached:,} of {p.prompt_tokens:,} prompt tokens "
            f"({p.cached_share:.0%}) were served from the provider's cache, billed at its "
            "cached price"
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


def _batch_action(opts: GenerateOptions, attach: bool, cancel: bool) -> None:
    """--attach (checked here, then generate follows the batches) and --cancel."""
    from distill.errors import UsageError
    from distill.runs import OUTPUTS, Run
    from distill.stages.generate import batch

    if attach and cancel:
        raise UsageError("--attach and --cancel together: pick one")
    if not opts.batch:
        raise UsageError(f"--{'attach' if attach else 'cancel'} is for --batch runs: add --batch")
    run = Run((opts.outputs or OUTPUTS) / opts.run_name())
    if cancel:
        for line in batch.cancel(run, opts.base_url):
            click.echo(line)
    elif not batch.has_batches(run):
        raise UsageError(
            f"{run.path}: no batch to attach to; start one with the same command without --attach"
        )


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
    if d.prefix_tokens and len(d.plan) > 1:
        if d.cached_tokens:
            cache = (
                f"about {d.cached_tokens:,} of the prompt tokens "
                f"({d.cached_tokens / max(1, d.prompt_tokens):.0%}) billed at the cached price"
            )
        else:
            cache = (
                "under the 1,024 tokens OpenAI's prompt cache needs, so none is cached "
                "(--examples N shows more seed chats and lengthens it)"
            )
        click.echo(
            f"Shared prefix: every request starts with the same {d.prefix_tokens:,} tokens "
            f"(output schema, instructions, style spec, {opts.examples} seed chats): {cache}"
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
            + (" at Batch API prices (half the list price)" if d.batch else "")
        )
    click.echo("Dry run: nothing sent, nothing written.")
