"""`distill eval`: the student against its base on the held-out split, with a report."""

from __future__ import annotations

from typing import Any

import click

from distill.commands.options import run_option


@click.command(name="eval")
@run_option
@click.option(
    "--student", default=None, help="Model to evaluate (default: the run's trained student)."
)
@click.option("--base", default=None, help="Model to compare with (default: the student's base).")
@click.option(
    "--judge",
    default=None,
    help="Model that judges student vs base (default: the teacher, unless it is local; "
    "'none' for no judge).",
)
@click.option("--base-url", default=None, help="An OpenAI-compatible server for openai: models.")
@click.option("--concurrency", type=int, default=8, show_default=True, help="Calls in flight.")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N eval examples.")
@click.option(
    "--probe-size",
    type=int,
    default=None,
    help="Ask only N general-skills probe items, spread over every skill (default: all 388; "
    "about 400 are needed for a +-5-point interval on the forgetting drop).",
)
def eval_(run_dir, **opts: Any) -> None:
    """Score the student vs its base on eval.jsonl: style, similarity, judge, forgetting."""
    from distill.runs import Run

    evaluate_and_print(Run.open(run_dir), opts)


def evaluate_and_print(run: Any, opts: dict[str, Any]) -> None:
    """Eval with a progress bar on stderr, then the summary (`distill run` does the same)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from distill.stages.evaluate import evaluate

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("eval calls", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = evaluate(
            run,
            progress=progress,
            warn=lambda line: bar.console.print(line, style="yellow", markup=False),
            **opts,
        )
    print_summary(report)


def print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from distill.stages.evaluate import estimate_text

    m = report["metrics"]
    table = Table(
        title=escape(
            f"eval: {report['student']} vs {report['base']} ({report['examples']} examples)"
        )
    )
    table.add_column("metric")
    table.add_column("student")
    table.add_column("base")
    table.add_column("student - base")

    def row(name: str, section: dict[str, Any], percent: bool = True) -> None:
        if "skipped" in section:
            table.add_row(name, Text(section["skipped"], style="dim"), "", "")
            return
        diff = section.get("diff")
        if "drop" in section:  # the probe stores base - student; show student - base
            d = section["drop"]
            diff = d if d["mean"] is None else {"mean": -d["mean"], "lo": -d["hi"], "hi": -d["lo"]}
        table.add_row(
            name,
            estimate_text(section["student"], percent),
            estimate_text(section["base"], percent) if "base" in section else "",
            estimate_text(diff, percent, diff=True) if diff else "",
        )

    row("style pass rate", m["style"])
    row("chrF to reference", m["chrf"], percent=False)
    row("similarity to reference", m["similarity"], percent=False)
    row("judge prefers student", m["win_rate"])
    row("copies training text", m["copying"])
    row("general-skills probe", m["probe"])
    lg = m["loss"]
    if "skipped" in lg:
        table.add_row("loss gap (eval - train)", Text(lg["skipped"], style="dim"), "", "")
    else:
        table.add_row(
            "loss gap (eval - train)",
            f"{lg['gap']:+.3f} (train {lg['train_loss']:.3f}, eval {lg['eval_loss']:.3f})",
            "",
            "",
        )
    console = Console()
    console.print(table)
    side = report.get("side_by_side")
    if side:
        console.print(side_by_side_table(side))
    rubric = report.get("rubric")
    if rubric and "skipped" in rubric:
        console.print(Text(rubric["skipped"]), soft_wrap=True)
    for r in (rubric or {}).get("rules", []):
        console.print(
            Text(
                f"rubric {r['rule']} (judged by {r['judge']}): student "
                f"{estimate_text(r['student'], True)}, base {estimate_text(r['base'], True)}, "
                f"student - base {estimate_text(r['gain'], True, diff=True)}"
            ),
            soft_wrap=True,
        )
    topics = m.get("style_by_axis", {}).get("topic", [])
    if topics:
        weakest = "; ".join(
            f"{r['value']} {estimate_text(r['student'])} vs base {estimate_text(r['base'])} "
            f"(n={r['n']})"
            for r in topics[:3]
        )
        console.print(Text(f"weakest topics (style pass rate): {weakest}"), soft_wrap=True)
    head = report["headline"]
    style = {"worked": "bold green", "did-not-work": "bold red"}.get(head["outcome"], "bold yellow")
    console.print(Text(head["text"], style=style), soft_wrap=True)
    console.print(Text(report["verdict"]), soft_wrap=True)
    console.print(Text(f"report: {report['folder']}/report.html"), soft_wrap=True)


def side_by_side_table(side: dict[str, Any]) -> Any:
    """Base, each compared student and the student in columns, on the same held-out set."""
    from rich.markup import escape
    from rich.table import Table

    from distill.stages.evaluate import estimate_text

    models = side["models"]
    table = Table(title="side by side (same held-out examples and probe)")
    table.add_column("metric")
    for r in models:
        label = {"base": "base", "student": "student"}.get(r["role"], "compared")
        table.add_column(escape(f"{label}: {r['model']}"), overflow="fold")

    def cell(section: Any, diff: bool = False) -> str:
        if not section:
            return ""
        if "skipped" in section:
            return "skipped"
        if "student" in section and "mean" not in section:  # a win-rate section
            section = section["student"]
        return estimate_text(section, True, diff=diff)

    table.add_row("style pass rate", *(cell(r.get("style")) for r in models))
    table.add_row("style gain vs base", *(cell(r.get("style_gain"), True) for r in models))
    table.add_row("judge prefers it over base", *(cell(r.get("win_rate")) for r in models))
    table.add_row("general-skills probe", *(cell(r.get("probe")) for r in models))
    table.add_row("probe drop vs base", *(cell(r.get("probe_drop"), True) for r in models))
    return table
