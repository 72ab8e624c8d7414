"""`distill train`: a hosted fine-tune (OpenAI or compatible) or a local LoRA adapter."""

from __future__ import annotations

import click

from distill.commands.options import run_option
from distill.lora.config import local_help
from distill.runs import Run


@click.command()
@run_option
@click.option(
    "--student",
    default=None,
    help="gpt-4o-mini (hosted) or local:NAME|PATH (LoRA on this machine). Default: "
    "gpt-4o-mini after a teacher hosted by OpenAI, else local:smollm2-135m.",
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Default: OpenAI's rule (3, scaled to 100..25,000 example-epochs); 1 for local DPO.",
)
@click.option(
    "--batch-size", type=int, default=None, help="Hosted: examples per batch (default auto)."
)
@click.option(
    "--require-review",
    is_flag=True,
    help="Refuse while any example in train.jsonl or eval.jsonl has no review decision.",
)
@click.option("--yes", "-y", is_flag=True, help="Hosted: skip the cost confirmation.")
# hosted
@click.option("--base-url", default=None, help="Hosted: an OpenAI-compatible fine-tuning API.")
@click.option(
    "--lr-multiplier",
    type=float,
    default=None,
    help="Hosted: learning-rate multiplier (default auto).",
)
@click.option("--suffix", default=None, help="Hosted: model name suffix (default: the run name).")
@click.option("--seed", type=int, default=None, help="Hosted job seed / local shuffling seed.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Hosted: follow the job until it ends.",
)
@click.option("--attach", is_flag=True, help="Hosted: re-attach to the run's existing job.")
@click.option("--cancel", is_flag=True, help="Hosted: cancel the run's job.")
# local
@click.option("--lr", type=float, default=None, help=local_help("lr"))
@click.option("--lora-r", type=int, default=None, help=local_help("lora_r"))
@click.option("--lora-alpha", type=int, default=None, help=local_help("lora_alpha"))
@click.option("--lora-dropout", type=float, default=None, help=local_help("lora_dropout"))
@click.option(
    "--batch-tokens",
    type=int,
    default=None,
    help=local_help("batch_tokens"),
)
@click.option("--max-seq-len", type=int, default=None, help=local_help("max_seq_len"))
@click.option(
    "--patience",
    type=int,
    default=None,
    help=local_help("patience"),
)
@click.option("--device", default=None, help=local_help("device"))
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default=None,
    help=local_help("precision"),
)
@click.option(
    "--checkpoint-every",
    type=int,
    default=None,
    help=local_help("checkpoint_every"),
)
@click.option("--merge", is_flag=True, help="Local: also write a merged model.")
@click.option(
    "--method",
    type=click.Choice(["supervised", "dpo"]),
    default="supervised",
    show_default=True,
    help="dpo: preference tuning on pairs.jsonl (`distill pairs`), from the run's SFT student.",
)
@click.option(
    "--beta",
    type=float,
    default=None,
    help="DPO: how far the policy may move from the reference (local default 0.1; "
    "hosted default auto).",
)
@click.option(
    "--export",
    "export_as",
    type=click.Choice(["gguf", "transformers"]),
    default=None,
    help="Local: then write the trained student as `distill export --format ...` does "
    "(<run>/export/<format>/: one GGUF + Modelfile, or a transformers folder).",
)
def train(
    run_dir, student: str | None, require_review: bool, method: str, export_as, **opts
) -> None:
    """Fine-tune the student on the run's train.jsonl (eval.jsonl for validation).

    The review decisions are applied first: rejected examples leave train.jsonl and
    eval.jsonl (to rejected.jsonl), edited ones are trained as edited.
    """
    from distill.stages.pipeline import pick_student, run_teacher, train_student

    run = Run.open(run_dir)
    if method == "dpo" or opts.get("beta") is not None:
        if method != "dpo":
            raise click.UsageError("--beta is a DPO setting; add --method dpo")
        # the default student is the run's SFT student (train_dpo says which)
    elif student is None:
        last = run.stage("train")
        if (
            (opts.get("attach") or opts.get("cancel"))
            and last.get("backend") == "openai"
            and str(last.get("student", "")).startswith("openai:")
        ):
            # --attach / --cancel act on the run's hosted job without repeating --student
            student = str(last["student"])
        else:
            student, why = pick_student(*run_teacher(run))
            click.echo(f"student: {student} ({why}; pass --student to choose)", err=True)

    def say(line: str) -> None:
        click.echo(line, err=True)

    if export_as and method == "dpo":
        raise click.UsageError(
            "--export writes the supervised student; a DPO student cannot be exported yet"
        )
    if export_as and student is not None and not student.startswith("local:"):
        raise click.UsageError(f"--export writes a local student's weights; {student} is hosted")
    train_student(run, student, require_review=require_review, say=say, method=method, **opts)
    if export_as:
        from distill.commands.export import echo_student
        from distill.export.student import export_student

        echo_student(run, export_student(run, export_as), export_as)
