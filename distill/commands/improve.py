"""`distill improve`: one round of generating more where the student fails, then retraining and
evaluating on the same held-out examples."""

from __future__ import annotations

from typing import Any

import click

from distill.commands.options import run_option


@click.command()
@run_option
@click.option(
    "--n",
    type=int,
    default=None,
    help="New examples to add to train (default: half the training set, at least 20).",
)
@click.option(
    "--axis",
    type=click.Choice(["topic", "persona", "intent", "turns"]),
    default="topic",
    show_default=True,
    help="The plan axis whose cells are ranked and targeted.",
)
@click.option(
    "--cells",
    type=int,
    default=3,
    show_default=True,
    help="How many of the weakest cells to target.",
)
@click.option(
    "--control",
    is_flag=True,
    help="Also train a student on as many new examples spread uniformly, to see whether "
    "targeting beat just adding data (a second generation, training and eval).",
)
@click.option(
    "--max-budget", type=float, default=None, help="Hard cap in USD for the round's teacher calls."
)
@click.option(
    "--probe-size",
    type=int,
    default=None,
    help="Eval's general-skills probe items (default: as many as the last eval asked).",
)
@click.option("--yes", "-y", is_flag=True, help="Skip a hosted fine-tune's cost confirmation.")
def improve(run_dir, **opts: Any) -> None:
    """Generate more where the student fails, retrain, re-evaluate on the frozen eval set.

    Reads the last eval, ranks the plan cells (topics, personas, ...) by how often the student
    breaks the style spec there and how few training examples they hold, has the run's teacher
    write --n new examples weighted toward the weakest, keeps those new to the run, adds them
    to train only, retrains and evaluates again. Killed, it resumes where it was.
    """
    from distill.runs import Run

    improve_and_print(Run.open(run_dir), opts)


def improve_and_print(run: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """One round with progress on stderr, then the before/after table (`distill run
    --rounds` does the same)."""
    from distill.commands.generate import _ProgressBar
    from distill.stages.improve import ImproveOptions, improve_round

    def say(line: str) -> None:
        click.secho(line, bold=True, err=True)

    bar = _ProgressBar()
    with bar:
        report = improve_round(run, ImproveOptions(**opts), say=say, generate_progress=bar.update)
    print_round(report)
    return report


def print_round(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from distill.stages.improve.compare import pts

    axis = report["axis"]
    control = report["added_control"] is not None
    table = Table(
        title=escape(
            f"improve round {report['round']}: style pass rate by {axis} "
            f"({report['held_out']} held-out examples; {report['added']} added to train; "
            "* = targeted)"
        )
    )
    for col in ("", axis, "held-out", "train+new", "before", "after", "after - before"):
        table.add_column(col)
    if control:
        table.add_column("control (new)")
    for row in report["cells"].get(axis, []):
        cells = [
            "*" if row["targeted"] else "",
            escape(row["value"]),
            str(row["n"]),
            f"{row.get('train_before', 0)}+{row.get('added', 0)}",
            _pct(row["before"]),
            _pct(row["after"]),
            pts(row["gain"]),
        ]
        if control:
            cells.append(f"{_pct(row['control'])} (+{row.get('added_control', 0)})")
        table.add_row(*cells)
    console = Console()
    console.print(table)
    att = report["attribution"]
    o = att["overall"]
    line = f"overall style pass rate {pts(o['gain'])} on {o['n']} held-out examples"
    if control:
        line += f" (control {pts(o['control_gain'])})"
    console.print(Text(line), soft_wrap=True)
    console.print(Text(report["headline"], style="bold"), soft_wrap=True)
    console.print(Text(f"report: {report['folder']}/report.json"), soft_wrap=True)


def _pct(estimate: dict[str, Any]) -> str:
    return "n/a" if estimate.get("mean") is None else f"{100 * estimate['mean']:.0f}%"
