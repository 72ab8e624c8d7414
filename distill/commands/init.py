"""`distill init --seeds FILE`: draft <stem>.style.toml beside the seeds, for a person to edit."""

from __future__ import annotations

from pathlib import Path

import click

SHOWN = 20  # seed problems printed before "... and N more"


@click.command()
@click.option(
    "--seeds",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help='Your seed chats, one {"messages": [...]} per line.',
)
@click.option(
    "--teacher",
    default=None,
    help="A model to propose the description, scope, axes and rules (openai:MODEL, "
    "ollama:MODEL). Without one (or with the embedded local model) only the measured parts "
    "are drafted: nothing is sent, nothing is paid.",
)
@click.option("--base-url", default=None, help="Any OpenAI-compatible server for --teacher.")
@click.option("--force", is_flag=True, help="Draft over an existing style spec.")
def init(seeds: Path, teacher: str | None, base_url: str | None, force: bool) -> None:
    """Draft a style spec (<seeds name>.style.toml, beside the seeds) from your seed chats.

    Measures the system prompt, reply limits and turns from the seeds; a --teacher proposes
    the description, scope, topics, personas, intents and voice rules. Every rule is checked
    on your seeds: one they break is written commented out. Never overwrites a spec without
    --force. Then edit it, and: distill validate SEEDS --style SPEC; distill generate.
    """
    from distill.stages.draft import draft_spec

    d = draft_spec(seeds, teacher, force=force, base_url=base_url)
    p = d.proposal
    active = [r for r in d.rules if not r.broken_by]
    click.echo(
        f"Wrote {d.path}: system prompt, reply limits ({d.spec.reply.min_words}-"
        f"{d.spec.reply.max_words} words, {d.spec.reply.max_sentences} sentences), turns "
        f"{d.spec.axes.turns}, {len(active)} rule(s), measured from {d.chats} seed chats."
    )
    if p.spec is not None:
        spent = "from calls.sqlite, free" if p.cached else f"{p.tokens:,} tokens, ${p.cost_usd:.4f}"
        click.echo(
            f"Proposed by {p.teacher}: description, scope, {len(d.spec.axes.topics)} topics, "
            f"{len(d.spec.axes.personas)} personas, {len(d.spec.axes.intents)} intents, "
            f"{len(p.spec.rules)} rule(s) ({spent}; logged in {d.calls_path})."
        )
    else:
        click.echo(p.note)
    for r in d.dropped:
        click.echo(
            f"Dropped rule {r.rule.name!r} ({r.origin}): your seeds break it at "
            f"{r.where(str(seeds))}; it is in {d.path} commented out, to fix or delete."
        )
    for line in d.seed_problems[:SHOWN]:
        click.echo(line)
    if len(d.seed_problems) > SHOWN:
        click.echo(f"... and {len(d.seed_problems) - SHOWN} more")
    verdict = (
        "every seed passes the draft"
        if not d.seed_problems
        else f"{len(d.seed_problems)} problem(s) on your seeds, listed above"
    )
    click.echo(
        f"Checked on your seeds: {verdict}. Next: edit {d.path}, then "
        f"distill validate {seeds} --style {d.path}; distill generate --seeds {seeds}"
    )
