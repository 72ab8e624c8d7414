"""`distill run`: the whole pipeline in one command, offline on the embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from distill.models import DEFAULT_STUDENT, DEFAULT_TEACHER, parse_model

# The demo sizes: the embedded teacher writes a conversation in ~10 s on 2 cores, so the
# default n keeps `distill run` with no flags within ~15 minutes end to end.
EMBEDDED_N = 24
HOSTED_N = 300


@click.command()
@click.option(
    "--seeds",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Seed conversations (chat JSONL).",
)
@click.option(
    "--style",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Style spec (default: <seeds>.style.toml beside the seeds).",
)
@click.option("--name", default=None, help="Run name (default: the seeds file's stem).")
@click.option("--teacher", default=DEFAULT_TEACHER, show_default=True)
@click.option("--student", default=DEFAULT_STUDENT, show_default=True)
@click.option(
    "--judge",
    default=None,
    help="Judge model for eval's win rate (default: the teacher when hosted).",
)
@click.option("--base-url", default=None, help="OpenAI-compatible server for the teacher.")
@click.option(
    "--n",
    type=int,
    default=None,
    help=f"Conversations to generate (default {EMBEDDED_N} with the embedded teacher, else {HOSTED_N}).",
)
@click.option("--epochs", type=int, default=None, help="Training epochs (default: OpenAI's rule).")
@click.option("--eval-size", default=None, help="Held-out share or count (default 0.1).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--concurrency", type=int, default=None, help="Parallel teacher requests.")
@click.option("--max-budget", type=float, default=None, help="Hard cap in USD for teacher calls.")
@click.option("--yes", "-y", is_flag=True, help="Skip the hosted fine-tune's cost confirmation.")
@click.pass_context
def run(
    ctx: click.Context,
    seeds: Path,
    style: Path | None,
    name: str | None,
    teacher: str,
    student: str,
    judge: str | None,
    base_url: str | None,
    n: int | None,
    epochs: int | None,
    eval_size: str | None,
    seed: int,
    concurrency: int | None,
    max_budget: float | None,
    yes: bool,
) -> None:
    """generate -> dedupe -> split -> train -> eval, skipping stages whose inputs are unchanged."""
    from distill.cli import cli
    from distill.errors import InputError
    from distill.runs import OUTPUTS, Run
    from distill.stages.pipeline import run_pipeline

    if not seeds.exists():
        raise InputError(f"{seeds}: seeds file not found; pass --seeds PATH to a chat JSONL")
    style = style or seeds.with_name(seeds.stem + ".style.toml")
    name = name or seeds.stem
    if n is None:
        n = EMBEDDED_N if parse_model(teacher).provider == "local" else HOSTED_N
    options: dict[str, dict[str, Any]] = {
        "generate": dict(
            seeds=seeds,
            style=style,
            name=name,
            teacher=teacher,
            base_url=base_url,
            n=n,
            seed=seed,
            concurrency=concurrency,
            max_budget=max_budget,
        ),
        "dedupe": {},
        "split": dict(eval_size=eval_size, seed=seed),
        "train": dict(student=student, epochs=epochs, seed=seed, yes=yes),
        "eval": dict(judge=judge),
    }
    run_dir = OUTPUTS / name

    def invoke(stage: str, opts: dict) -> None:
        cmd = cli.get_command(ctx, "eval" if stage == "eval" else stage)
        assert cmd is not None
        params = {p.name: p for p in cmd.params}
        args = {
            k: params[k].type_cast_value(ctx, v)
            for k, v in opts.items()
            if k in params and v is not None
        }
        known = set(params)
        if "run_dir" in known and stage != "generate":
            args["run_dir"] = run_dir
        ctx.invoke(cmd, **args)

    def say(msg: str) -> None:
        click.secho(msg, bold=True, err=True)

    extra = {"generate": [seeds, style]}
    result = run_pipeline(invoke, lambda: Run.open(run_dir), options, extra, say)
    report = next(iter(sorted(result.path.glob("eval/*/report.html"))), None)
    click.echo(f"Done: {result.path}")
    if report:
        click.echo(f"Report: {report}")
