"""`distill dedupe`: remove exact and near-duplicate examples (MinHash LSH), also against seeds."""

from __future__ import annotations

from pathlib import Path

import click

from distill.commands.options import run_option


@click.command()
@run_option
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.8,
    show_default=True,
    help="Jaccard similarity of character 5-gram shingles at which two examples are duplicates.",
)
@click.option(
    "--num-perm",
    type=click.IntRange(min=2),
    default=128,
    show_default=True,
    help="MinHash permutations; bands x rows are chosen by datasketch's optimiser.",
)
@click.option(
    "--ngram",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Shingle length in characters.",
)
@click.option(
    "--seeds",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Seed conversations (default: the seeds file recorded by `distill generate`).",
)
@click.option(
    "--include-seeds/--no-include-seeds",
    default=True,
    show_default=True,
    help="Put the seeds themselves in the output (they are always used to find near-copies).",
)
@click.option(
    "--lsh-storage",
    default=None,
    metavar="redis://HOST:PORT",
    help="Keep the LSH index in Redis (datasketch storage) instead of memory.",
)
@click.option(
    "--index",
    default=None,
    metavar="redis://HOST:PORT/NAME",
    help="A dedupe index many runs and machines share: this input is checked against every "
    "earlier shard in it and added to it (README: a dedupe index many machines share).",
)
@click.option(
    "--against",
    is_flag=True,
    default=False,
    help="With --index: check against everything indexed without adding this input.",
)
@click.option(
    "--index-wait",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Seconds to wait for earlier shards to finish indexing; 0: no limit.",
)
@click.option(
    "--drop-shard",
    type=click.IntRange(min=1),
    default=None,
    expose_value=False,
    callback=lambda ctx, _p, v: ctx.meta.__setitem__("drop_shard", v),
    help="With --index: leave shard N (one that never finished) out of later runs, and exit.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Processes that hash examples; 0: every core when the input is over 32 MB.",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Dedupe any chat JSONL instead of a run (needs --output).",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where --input's deduplicated lines go. The removed lines (each with its reason) and "
    "the report go beside it: --output clean.jsonl also writes clean.rejected.jsonl and "
    "clean.dedupe_report.json.",
)
def dedupe(
    run_dir: Path | None,
    threshold: float,
    num_perm: int,
    ngram: int,
    seeds: Path | None,
    include_seeds: bool,
    lsh_storage: str | None,
    index: str | None,
    against: bool,
    index_wait: float,
    workers: int,
    input_path: Path | None,
    output_path: Path | None,
) -> None:
    """Remove exact and near-duplicate examples, and near-copies of the seeds.

    Writes deduped.jsonl and dedupe_report.json in the run; every removed example goes to
    rejected.jsonl with the id it duplicates and their Jaccard similarity. With --input and
    --output, any chat JSONL: the files go beside OUTPUT (see --output).
    """
    from distill.errors import UsageError
    from distill.runs import Run
    from distill.stages.dedupe import DedupeConfig, dedupe_file, dedupe_run, drop_shard

    config = DedupeConfig(
        threshold=threshold,
        num_perm=num_perm,
        ngram=ngram,
        include_seeds=include_seeds,
        lsh_storage=lsh_storage,
        index=index,
        against=against,
        index_wait=index_wait,
        workers=workers,
    )
    drop = click.get_current_context().meta.get("drop_shard")
    if drop is not None:
        if index is None:
            raise UsageError("--drop-shard needs --index redis://HOST:PORT/NAME")
        click.echo(drop_shard(index, drop))
        return
    if against and index is None:
        raise UsageError("--against needs --index redis://HOST:PORT/NAME to check against")
    if (input_path is None) != (output_path is None):
        raise UsageError("--input and --output go together: pass both, or neither to use the run")
    if input_path is not None and output_path is not None:
        if run_dir is not None:
            raise UsageError("--run and --input/--output exclude each other; pick one")
        result = dedupe_file(input_path, output_path, config, seeds=seeds)
    else:
        result = dedupe_run(Run.open(run_dir), config, seeds=seeds)
    _print(result)


def _print(result) -> None:  # noqa: ANN001 - DedupeResult, imported lazily
    from rich.console import Console
    from rich.table import Table

    p = result.params
    table = Table(title="dedupe", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("input examples", str(result.input))
    if result.seeds:
        table.add_row("seeds", str(result.seeds))
    table.add_row("exact duplicates removed", str(result.exact))
    table.add_row("near-duplicates removed", str(result.near))
    table.add_row("near-copies of seeds removed", str(result.seed_copies))
    if result.index_name:
        table.add_row("duplicates of earlier shards removed", str(result.indexed))
    if result.invalid:
        table.add_row("not chat examples (removed)", str(result.invalid))
    table.add_row("kept", str(result.kept), style="bold")
    console = Console()
    console.print(table)
    console.print(
        f"MinHash LSH: {p.bands} bands x {p.rows} rows for Jaccard >= {p.threshold}; expected "
        f"false positives {p.false_positive / p.threshold:.1%}, false negatives "
        f"{p.false_negative / (1 - p.threshold):.1%} (candidates are then checked exactly)",
        markup=False,
    )
    if result.largest:
        console.print("largest clusters:", markup=False)
    for c in result.largest[:3]:
        console.print(
            f"  {c['size']} examples, kept {c['kept']}: {c['kept_text'][:40]}...", markup=False
        )
    if result.index_name:
        where = f"shard {result.shard}" if result.shard else "checked against it, not added"
        console.print(f"index {result.index_name}: {where}", markup=False)
    for w in result.warnings:
        console.print(f"warning: {w}", style="yellow", markup=False)
    console.print(
        f"{result.output}  (removed: {result.rejected}; report: {result.report})", markup=False
    )
