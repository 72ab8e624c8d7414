"""`distill validate FILE`: check a chat JSONL file before paying for a fine-tune."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

PRINT_PER_CODE = 50  # text output shows this many lines per code; --format json has them all


@click.command()
@click.pass_context
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--style",
    "style_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Style spec (.style.toml): warn on every reply that breaks the voice.",
)
@click.option(
    "--model",
    default="gpt-4o-mini",
    show_default=True,
    help="Model to fine-tune: sets the per-example token limit and the training price.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--judge",
    default=None,
    help="A model to judge the style spec's rubric rules (sentences, not regexes) on every "
    "reply, cached in outputs/.judge/calls.sqlite; without one they are skipped, and said so.",
)
def validate(
    ctx: click.Context,
    file: Path,
    style_path: Path | None,
    model: str,
    fmt: str,
    judge: str | None,
) -> None:
    """Check FILE (or - for stdin) against OpenAI's chat fine-tuning format; count tokens and
    estimate the training cost.

    Prints `file:line: code: message` for each problem. Exits 0 when the file is valid
    (warnings allowed), 1 when it has errors.
    """
    from distill.stages.validate import validate_file, validate_stream
    from distill.style import StyleSpec

    style = StyleSpec.load(style_path) if style_path is not None else None
    if str(file) == "-":
        report = validate_stream(sys.stdin.buffer, "<stdin>", style=style, model=model)
    else:
        report = validate_file(file, style=style, model=model)
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_text(report)
    if style is not None and style.rubrics:
        _judge_rubrics(file, style, judge, err=fmt == "json")
    if not report.ok:
        ctx.exit(1)


def _judge_rubrics(file: Path, style, judge: str | None, err: bool) -> None:  # noqa: ANN001
    """Rubric rules, judged by `judge`, or one line saying why they were not."""
    from distill import runs
    from distill.rubric import judge_file, skipped_line, unusable

    why = unusable(judge)
    if why is None and str(file) == "-":
        why = "stdin is read once; judge a file"
    if why is not None:
        click.echo(skipped_line(style, why), err=err)
        return
    assert judge is not None
    r = judge_file(file, style, judge, runs.OUTPUTS / ".judge" / "calls.sqlite")
    for line in r.problems[:PRINT_PER_CODE]:
        click.echo(line, err=err)
    if len(r.problems) > PRINT_PER_CODE:
        click.echo(f"{file}: rubric: ... and {len(r.problems) - PRINT_PER_CODE:,} more", err=err)
    rates = "; ".join(f"{n} {k}/{r.replies}" for n, k in r.passed.items())
    click.echo(
        f"rubric rules judged by {r.judge}: {rates} replies pass (${r.cost_usd:.4f}, "
        f"{r.cached} of {r.replies} from calls.sqlite)",
        err=err,
    )


def _print_text(report) -> None:  # noqa: ANN001 - ValidationReport, imported lazily
    from rich.console import Console
    from rich.table import Table

    shown: dict[str, int] = {}
    for p in report.errors + report.warnings:
        n = shown.get(p.code, 0) + 1
        shown[p.code] = n
        if n <= PRINT_PER_CODE:
            click.echo(p.format(report.path))
    for code, total in sorted(report.counts.items()):
        if total > PRINT_PER_CODE:
            click.echo(f"{report.path}: {code}: ... and {total - PRINT_PER_CODE:,} more")

    s = report.stats
    tok = s["tokens_per_example"]
    msgs = s["messages_per_example"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("examples", f"{s['examples']:,} valid of {s['lines']:,} lines")
    roles = ", ".join(f"{r} {n:,}" for r, n in s["roles"].items() if n)
    if s["examples"]:
        table.add_row(
            "messages", f"{msgs['min']}-{msgs['max']} per example, mean {msgs['mean']}; {roles}"
        )
    if tok["total"]:
        table.add_row(
            "tokens / example",
            f"min {tok['min']:,}  mean {tok['mean']:,}  p95 {tok['p95']:,}  max {tok['max']:,}"
            f"  (limit {s['token_limit']:,} for {s['model']})",
        )
        cost = s["estimated_cost_usd"]
        price = f"≈ ${cost:,.2f}" if cost is not None else "cost unknown for this model"
        table.add_row(
            "training",
            f"{s['epochs']} epochs x {s['billed_tokens_per_epoch']:,} tokens = "
            f"{s['billed_tokens']:,} billed tokens, {price}",
        )
    verdict = (
        f"[green]valid[/green] ({report.warning_count:,} warnings)"
        if report.ok
        else f"[red]invalid[/red]: {report.error_count:,} errors, {report.warning_count:,} warnings"
    )
    table.add_row("result", verdict)
    Console(highlight=False, soft_wrap=True).print(table)
