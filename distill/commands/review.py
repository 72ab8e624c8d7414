"""`distill review`: accept, reject or edit examples before training (a terminal UI), or the
non-interactive forms for scripts: --list, --accept-unflagged, --export FILE.html."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from distill.commands.options import run_option
from distill.errors import UsageError, require


@click.command()
@run_option
@click.option(
    "--style",
    "style_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Style spec for the style flags (default: the one the run was generated with).",
)
@click.option(
    "--list", "list_", is_flag=True, help="Print one line per example: id, status, flags."
)
@click.option("--flagged", is_flag=True, help="With --list or --export: only flagged examples.")
@click.option(
    "--accept-unflagged",
    is_flag=True,
    help="Accept every unflagged example that has no decision yet; flagged ones wait for a person.",
)
@click.option(
    "--export",
    "export_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write a static HTML page of the examples with their flags and decisions.",
)
def review(
    run_dir: Path | None,
    style_path: Path | None,
    list_: bool,
    flagged: bool,
    accept_unflagged: bool,
    export_path: Path | None,
) -> None:
    """Accept, reject or edit the run's examples before training.

    Keys: a accept, r reject (with an optional reason), e edit (ctrl+s saves), E edit in
    $EDITOR, n/p next/previous, u next unreviewed, f filter, / search, j/k scroll, q quit. Decisions go to review.jsonl as they are made; reopening resumes at
    the first unreviewed example.
    """
    from distill.runs import Run
    from distill.stages import review as stage

    interactive = not (list_ or accept_unflagged or export_path)
    if flagged and not (list_ or export_path):
        raise UsageError("--flagged goes with --list or --export FILE.html")
    if interactive and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "distill review needs a terminal; in a script use --list, --accept-unflagged "
            "or --export FILE.html"
        )
    if interactive:
        require("textual", "review", "distill review")

    run = Run.open(run_dir)
    session = stage.open_session(run, style_path)

    if interactive:
        from distill.review_app import ReviewApp

        ReviewApp(session).run()
    if accept_unflagged:
        n = stage.accept_unflagged(session)
        click.echo(
            f"accepted {n['accepted']} unflagged examples; {n['left_flagged']} flagged ones "
            f"wait for review; {n['already_decided']} already had a decision",
            err=list_,
        )
    if interactive or accept_unflagged:  # --list and --export only read: they mark nothing
        session.record_stage()
    if export_path:
        n_out = stage.export_html(session, export_path, flagged_only=flagged)
        click.echo(f"wrote {export_path} ({n_out} examples)", err=list_)
    if list_:
        try:
            for row in stage.list_rows(session, flagged_only=flagged):
                click.echo("\t".join(row))
            sys.stdout.flush()
        except BrokenPipeError:  # `distill review --list | head`: the reader has what it wanted
            _quiet_stdout()
            return
    c = session.counts()
    click.echo(
        f"{session.reviewed} / {session.total} reviewed: {c['accepted']} accepted, "
        f"{c['edited']} edited, {c['rejected']} rejected; {c['flagged']} flagged; "
        f"decisions in {run.file(stage.REVIEW_FILE)}",
        err=True,
    )


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush meets no closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (e.g. under a test runner)
        pass
