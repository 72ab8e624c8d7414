"""`distill status`: what each stage of the run has done."""

from __future__ import annotations

import json

import click

from distill.commands.options import run_option
from distill.runs import Run

STAGE_ORDER = ["generate", "dedupe", "split", "review", "train", "eval"]


@click.command()
@run_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def status(run_dir, fmt: str) -> None:
    """Show the run's stages, counts, spend and job state."""
    run = Run.open(run_dir)
    m = run.manifest
    pending = _pending_review(run)
    if fmt == "json":
        if pending:
            m["review_pending"] = pending
        click.echo(json.dumps(m, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {m.get('name', run.name)}  ({run.path})")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("details", overflow="fold")
    stages = m.get("stages", {})
    for name in STAGE_ORDER + [s for s in stages if s not in STAGE_ORDER]:
        info = stages.get(name)
        if info is None:
            table.add_row(name, "-", "")
            continue
        details = ", ".join(
            f"{k}={v}"
            for k, v in info.items()
            if k not in ("status", "at") and not isinstance(v, (dict, list))
        )
        table.add_row(name, str(info.get("status", "?")), details)
        for b in (info.get("batch") or {}).get("rounds") or []:  # generate --batch
            counts = b.get("request_counts") or {}
            table.add_row(
                f"  batch {b.get('round')}",
                str(b.get("status")),
                f"{b.get('batch_id')}: {b.get('requests')} requests, "
                f"{counts.get('completed', 0)} done, {counts.get('failed', 0)} failed",
            )
    for r in (m.get("improve") or {}).get("rounds") or []:
        table.add_row(
            f"improve {r.get('round')}",
            "done",
            f"{r.get('added')} added in {r.get('axis')} cells {', '.join(r.get('targets') or [])}"
            f"{' (with a uniform control)' if r.get('control') else ''}, "
            f"spend_usd={r.get('spend_usd')}; {r.get('headline')}",
        )
    console = Console()
    console.print(table)
    if pending:
        console.print(f"note: {pending}", style="yellow", markup=False, soft_wrap=True)


def _pending_review(run: Run) -> str | None:
    """Review decisions train.jsonl does not follow yet (or why that cannot be told)."""
    from distill.errors import DistillError
    from distill.stages.review_gate import pending_review_line

    try:
        return pending_review_line(run)
    except DistillError as e:
        return f"cannot compare review.jsonl with train.jsonl: {e}"
