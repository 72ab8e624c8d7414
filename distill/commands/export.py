"""`distill export`: the run's dataset, or its local student, in formats other tools load."""

from __future__ import annotations

from pathlib import Path

import click

from distill.commands.options import run_option

DATASET = ("hf", "parquet", "jsonl", "openai")  # distill.export.dataset.DATASET_FORMATS
STUDENT = ("gguf", "transformers")  # distill.export.student.STUDENT_FORMATS


@click.command()
@run_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice([*DATASET, *STUDENT]),
    required=True,
    help="hf: a Hugging Face dataset folder (Parquet + card); parquet; jsonl (with id and "
    "meta); openai: upload-ready train/eval JSONL + validate report; gguf: the local student "
    "merged into one GGUF + an Ollama Modelfile; transformers: the merged student as a model "
    "folder.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder to write (default: <run>/export/<format>/). Replaced whole if it is an "
    "earlier export; any other existing folder is refused.",
)
@click.option(
    "--license",
    "license_",
    default="unknown",
    show_default=True,
    help="hf: the dataset card's license (a Hub license id such as cc-by-4.0, apache-2.0).",
)
@click.option(
    "--base-gguf",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="gguf: the GGUF the student's base model folder was converted from (found by itself "
    "for an embedded model such as local:smollm2-135m).",
)
@click.option(
    "--gguf-type",
    type=click.Choice(["f16", "f32"]),
    default="f16",
    show_default=True,
    help="gguf: how the merged matrices are stored (norms are always f32).",
)
def export(
    run_dir: Path | None,
    fmt: str,
    out: Path | None,
    license_: str,
    base_gguf: Path | None,
    gguf_type: str,
) -> None:
    """Write the run's train and held-out examples, or its trained local student, for use
    outside distill.

    The student (gguf, transformers) is the LoRA adapter of `distill train --student local:...`
    merged into its base: one GGUF that llama.cpp, Ollama and LM Studio load, with a Modelfile
    (TEMPLATE and stop tokens from the chat template, SYSTEM from the style spec), or a standard
    transformers folder (config.json, safetensors, the tokenizer with its chat template).

    Datasets hold what training reads: train.jsonl and eval.jsonl with the current review
    decisions applied (rejected examples left out, edits as edited); the held-out split is
    named `test`, as `datasets` names it.
    """
    from distill.runs import Run

    run = Run.open(run_dir)
    if fmt in DATASET:
        from distill.export.dataset import export_dataset

        done = export_dataset(run, fmt, out, license=license_)
        rows = ", ".join(f"{s} {n}" for s, n in done.rows.items())
        for note in done.notes:
            click.echo(note)
        click.echo(f"exported {rows} examples as {fmt} to {done.folder}")
        for f in done.files:
            click.echo(f"  {f}")
        if fmt == "hf":
            click.echo(
                f'load it with: datasets.load_dataset("{done.folder}") or '
                f'datasets.load_dataset("parquet", data_dir="{done.folder / "data"}")'
            )
        if not done.valid:
            raise click.exceptions.Exit(1)
        return
    from distill.export.student import export_student

    done = export_student(run, fmt, out, base_gguf=base_gguf, dtype=gguf_type)
    echo_student(run, done, fmt)


def echo_student(run, done, fmt: str) -> None:  # noqa: ANN001 - Run, Exported (lazy imports)
    """What an export of the student wrote and how to use it (export and train --export)."""
    from distill.lora.outputs import ollama_name

    for note in done.notes:
        click.echo(note)
    click.echo(f"exported the student as {fmt} to {done.folder}")
    for f in done.files:
        click.echo(f"  {f}")
    if fmt == "gguf":
        name = ollama_name(run, run.stage("train").get("base", "local:student").split(":", 1)[1])
        click.echo(f"serve it with Ollama: ollama create {name} -f {done.folder / 'Modelfile'}")
    else:
        click.echo(f"load it with: AutoModelForCausalLM.from_pretrained({str(done.folder)!r})")
