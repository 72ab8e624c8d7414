"""`distill run`: the whole pipeline in one command, offline on the embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

# n when no one sets it, as `distill generate` sizes it (the embedded teacher is slow)
from distill.models import DEFAULT_TEACHER, EMBEDDED_N, HOSTED_N, parse_model

__all__ = ["EMBEDDED_N", "HOSTED_N", "run"]

# run's flags and the stages they set; every other flag of a stage comes from that stage's
# own settings (DISTILL_<STAGE>_*, the [stage] table of distill.toml) or its default
RUN_FLAGS = {
    "generate": (
        "seeds",
        "style",
        "prompts",
        "name",
        "teacher",
        "base_url",
        "n",
        "seed",
        "concurrency",
        "max_budget",
    ),
    "dedupe": (),
    "split": ("eval_size", "seed"),
    "train": ("student", "epochs", "seed", "yes"),
    "eval": ("judge", "probe_size"),
    "improve": ("probe_size", "max_budget", "yes"),  # with --rounds
}
# stage flags that make no sense inside `distill run` (it picks the run and does the work)
NOT_IN_RUN = {"run_dir", "dry_run", "input_path", "output_path", "attach", "cancel"}


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
@click.option(
    "--prompts",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Customer messages to answer (see `distill generate --help`): the teacher writes "
    "only the replies.",
)
@click.option("--name", default=None, help="Run name (default: the seeds file's stem).")
@click.option(
    "--teacher",
    default=DEFAULT_TEACHER,
    show_default=True,
    help="Unlike `distill generate`, the embedded model even when OPENAI_API_KEY is set: a run "
    "with no flags stays offline and free.",
)
@click.option(
    "--student",
    default=None,
    help="Default: gpt-4o-mini after a teacher hosted by OpenAI, else local:smollm2-135m.",
)
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
@click.option(
    "--eval-size",
    default=None,
    help="Held-out share or count (default: 10%, at least 20 when the data allows).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--concurrency", type=int, default=None, help="Parallel teacher requests.")
@click.option("--max-budget", type=float, default=None, help="Hard cap in USD for teacher calls.")
@click.option(
    "--probe-size",
    type=int,
    default=None,
    help="Eval: ask only N general-skills probe items (default: all).",
)
@click.option("--yes", "-y", is_flag=True, help="Skip the hosted fine-tune's cost confirmation.")
@click.option(
    "--rounds",
    type=int,
    default=0,
    show_default=True,
    help="Then R rounds of `distill improve` (generate more where the student fails, retrain, "
    "re-evaluate); its other flags come from [improve] in distill.toml or DISTILL_IMPROVE_*.",
)
@click.pass_context
def run(ctx: click.Context, seeds: Path, **_: Any) -> None:
    """generate -> dedupe -> split -> train -> eval, skipping stages whose inputs are unchanged.

    Each stage also takes its own settings from DISTILL_<STAGE>_* and distill.toml's [stage]
    table; run's flags (and DISTILL_RUN_*, [run]) win over them at the same layer.
    """
    from distill import runs
    from distill.errors import DistillError, InputError, UsageError
    from distill.stages.pipeline import pick_student, run_pipeline
    from distill.stages.review_gate import pending_review_line

    if not seeds.exists():
        raise InputError(f"{seeds}: seeds file not found; pass --seeds PATH to a chat JSONL")
    rounds = int(ctx.params.get("rounds") or 0)
    if rounds < 0:
        raise UsageError("--rounds must be 0 or more")
    options = stage_options(ctx, seeds)
    gen = options["generate"]
    run_dir = runs.OUTPUTS / gen["name"]

    def say(msg: str) -> None:
        click.secho(msg, bold=True, err=True)

    if options["train"]["student"] is None:
        student, why = pick_student(gen["teacher"], gen["base_url"])
        options["train"]["student"] = student
        say(f"student: {student} ({why}; pass --student to choose)")
    try:
        line = pending_review_line(
            runs.Run.open(run_dir), then="this run applies them (split, train and eval run again)"
        )
    except DistillError:  # no run yet, or files the stages themselves will report
        line = None
    if line:
        say(f"note: {line}")

    def invoke(stage: str, opts: dict[str, Any]) -> None:
        STAGE_RUNNERS[stage](run_dir, dict(opts))

    extra = {
        "generate": [gen["seeds"], gen["style"], *([gen["prompts"]] if gen["prompts"] else [])]
    }
    result = run_pipeline(invoke, lambda: runs.Run.open(run_dir), options, extra, say)
    if rounds:
        from distill.commands.improve import improve_and_print
        from distill.stages.improve import rounds_done

        if rounds_done(result) >= rounds:
            say(f"[improve] {rounds_done(result)} round(s) done already, skipped")
        while rounds_done(result) < rounds:
            say(f"[improve {rounds_done(result) + 1}/{rounds}] improve ...")
            improve_and_print(result, dict(options["improve"]))
    report = next(iter(sorted(result.path.glob("eval/*/report.html"))), None)
    click.echo(f"Done: {result.path}")
    if report:
        click.echo(f"Report: {report}")


def stage_options(ctx: click.Context, seeds: Path) -> dict[str, dict[str, Any]]:
    """Each stage's flags as `distill run` drives it (see distill.config.combine)."""
    from distill.cli import cli
    from distill.config import DEFAULT, combine, layered_params, stage_settings

    root = ctx.find_root()
    own = layered_params(ctx)
    options: dict[str, dict[str, Any]] = {}
    layers: dict[str, dict[str, int]] = {}
    for stage, flags in RUN_FLAGS.items():
        command = cli.get_command(root, stage)
        assert command is not None
        args = ["--seeds", str(seeds)] if stage == "generate" else []
        merged = combine({k: own[k] for k in flags}, stage_settings(root, command, stage, args))
        options[stage] = {k: v for k, (v, _) in merged.items() if k not in NOT_IN_RUN}
        layers[stage] = {k: layer for k, (_, layer) in merged.items()}
    gen = options["generate"]
    gen["seeds"] = seeds
    gen["style"] = gen["style"] or seeds.with_name(seeds.stem + ".style.toml")
    gen["name"] = gen["name"] or seeds.stem
    if layers["generate"]["n"] == DEFAULT:  # no one chose n: size it for the teacher
        gen["n"] = EMBEDDED_N if parse_model(gen["teacher"]).provider == "local" else HOSTED_N
    if layers["train"]["student"] == DEFAULT:
        options["train"]["student"] = None  # picked from the teacher by the caller
    return options


# -- the stages, called as library functions ------------------------------------------------
def _generate(run_dir: Path, opts: dict[str, Any]) -> None:
    from distill.commands.generate import _ProgressBar, print_summary
    from distill.stages import generate as stage

    bar = _ProgressBar()
    with bar:
        result = stage.generate(stage.GenerateOptions(**opts), on_progress=bar.update)
    print_summary(result)


def _dedupe(run_dir: Path, opts: dict[str, Any]) -> None:
    from distill.commands.dedupe import _print
    from distill.runs import Run
    from distill.stages.dedupe import DedupeConfig, dedupe_run

    seeds = opts.pop("seeds")
    _print(dedupe_run(Run.open(run_dir), DedupeConfig(**opts), seeds=seeds))


def _split(run_dir: Path, opts: dict[str, Any]) -> None:
    from distill.runs import Run
    from distill.stages.split import split_config, split_run

    config = split_config(opts["eval_size"], opts["seed"])
    result = split_run(Run.open(run_dir), config)
    counts = result.report["counts"]
    click.echo(
        f"train {counts['train']}, eval {counts['eval']} (review: {counts['review_rejected']} "
        f"rejected, {counts['review_edited']} edited); eval examples with Jaccard >= "
        f"{result.report['leakage']['threshold']} to train: "
        f"{result.report['leakage']['count_above_threshold']}"
    )
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)


def _train(run_dir: Path, opts: dict[str, Any]) -> None:
    from distill.runs import Run
    from distill.stages.pipeline import train_student

    student = opts.pop("student")
    require_review = bool(opts.pop("require_review", False))
    train_student(
        Run.open(run_dir),
        student,
        require_review=require_review,
        say=lambda line: click.echo(line, err=True),
        **opts,
    )


def _eval(run_dir: Path, opts: dict[str, Any]) -> None:
    from distill.commands.evaluate import evaluate_and_print
    from distill.runs import Run

    evaluate_and_print(Run.open(run_dir), opts)


STAGE_RUNNERS = {
    "generate": _generate,
    "dedupe": _dedupe,
    "split": _split,
    "train": _train,
    "eval": _eval,
}
