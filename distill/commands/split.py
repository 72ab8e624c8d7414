"""`distill split`: hold out an eval split that shares no near-duplicate cluster with train."""

from __future__ import annotations

from pathlib import Path

import click

from distill.commands.options import run_option

MIN_EVAL = 20  # stages.split.MIN_EVAL (not imported: `distill --help` stays light)


@click.command()
@run_option
@click.option(
    "--eval-size",
    default=None,
    help="Held-out share (0.1) or count (50) of the examples. Default: 10%, but at least "
    f"{MIN_EVAL} when a third of the generated examples allows (fewer cannot show a result).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Same seed, same split (ids are hashed with it).",
)
def split(run_dir: Path | None, eval_size: str | None, seed: int) -> None:
    """Write train.jsonl and eval.jsonl, keeping near-duplicates on one side.

    Examples with Jaccard >= 0.5 are grouped and go to the same side; the split is stratified
    by topic; review.jsonl decisions (reject, edit) are applied first. split_report.json holds
    the leakage check: each eval example's highest Jaccard to any training example.
    """
    from rich.console import Console
    from rich.table import Table

    from distill.runs import Run
    from distill.stages.split import split_config, split_run

    run = Run.open(run_dir)
    config = split_config(eval_size, seed)
    result = split_run(run, config)
    report = result.report
    counts = report["counts"]
    table = Table(title="split")
    table.add_column("topic")
    table.add_column("examples", justify="right")
    table.add_column("eval", justify="right")
    for topic, s in report["strata"].items():
        table.add_row(topic, str(s["total"]), str(s["eval"]))
    table.add_row("all", str(counts["input"]), str(counts["eval"]), style="bold")
    console = Console()
    console.print(table)
    if counts["review_rejected"] or counts["review_edited"]:
        console.print(
            f"review: {counts['review_rejected']} rejected, {counts['review_edited']} edited",
            markup=False,
        )
    leak = report["leakage"]
    console.print(
        f"train {counts['train']}, eval {counts['eval']}; {counts['groups_with_several_examples']} "
        f"groups of near-duplicates kept on one side; eval examples with Jaccard >= "
        f"{leak['threshold']} to train: {leak['count_above_threshold']}",
        markup=False,
    )
    for w in result.warnings:
        console.print(f"warning: {w}", style="yellow", markup=False)
    console.print(
        f"{run.file('train.jsonl')}  {run.file('eval.jsonl')}  (report: {run.file('split_report.json')})",
        markup=False,
    )
