"""`distill import`: start a run from chat data you already have."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="import")
@click.argument("data", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--name", default=None, help="Run name (default: the file's stem).")
@click.option(
    "--style",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Style spec that eval and review score against (default: <data>.style.toml if present).",
)
def import_(data: Path, name: str | None, style: Path | None) -> None:
    """Make outputs/<name>/ from an existing chat JSONL, as if generate had written it.

    Every line is checked like `distill validate`; bad lines go to rejected.jsonl with
    file:line and the reason. Then run `distill dedupe`, `split`, `review`, `train`, `eval`.
    """
    from distill.stages.import_chats import import_chats

    r = import_chats(data, name=name, style=style)
    click.echo(f"imported {r.kept} of {r.lines} lines into {r.run.path}/generated.jsonl")
    if r.rejected:
        click.echo(
            f"{r.rejected} rejected (bad lines or exact duplicates): {r.run.file('rejected.jsonl')}"
        )
    if r.without_system_prompt:
        click.echo(f"note: {r.without_system_prompt} examples have no system prompt")
    if r.style is None:
        click.echo(
            "note: no style spec (pass --style FILE.style.toml): eval will skip the style metrics"
        )
    else:
        click.echo(f"style spec: {r.style}")
    click.echo("next: distill dedupe && distill split && distill train && distill eval")
