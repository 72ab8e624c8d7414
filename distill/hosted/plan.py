"""What a fine-tune will cost, checked and shown before anything is uploaded: the `distill
validate` rules on each file, billed tokens, epochs and price, the first example."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distill.hosted.options import HostedOptions
from distill.hosted.out import Out
from distill.runs import read_jsonl


@dataclass
class DataCheck:
    """What the validate rules say about one file, in the terms the cost prompt needs."""

    path: Path
    examples: int
    tokens_per_epoch: int
    epochs: int
    billed_tokens: int
    cost_usd: float | None
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    warnings: list[str] = field(default_factory=list)
    warning_count: int = 0


def check_data(
    path: Path, model: str, *, epochs: int | None = None, held_out: bool = False
) -> DataCheck:
    """Run `distill validate`'s rules on a file (the one place hosted training validates).

    `held_out` (the eval file): too few examples is only a warning, and nothing is billed."""
    from distill.validation.scan import validate_file

    report = validate_file(path, model=model)
    s = report.stats
    per_epoch = int(s.get("billed_tokens_per_epoch") or 0)
    n_epochs = epochs if epochs is not None else int(s.get("epochs") or 0)
    billed = 0 if held_out else per_epoch * n_epochs
    price = s.get("train_usd_per_1m")
    errors = [p.format(str(path)) for p in report.errors]
    warnings = [p.format(str(path)) for p in report.warnings]
    error_count, warning_count = report.error_count, report.warning_count
    if held_out:
        soft = [e for e in errors if ": too-few-examples: " in e]
        errors = [e for e in errors if e not in soft]
        warnings = soft + warnings
        error_count -= len(soft)
        warning_count += len(soft)
    return DataCheck(
        path=path,
        examples=int(s.get("examples") or 0),
        tokens_per_epoch=per_epoch,
        epochs=n_epochs,
        billed_tokens=billed,
        cost_usd=(billed * float(price) / 1_000_000) if price is not None else None,
        errors=errors,
        error_count=error_count,
        warnings=warnings,
        warning_count=warning_count,
    )


def print_plan(
    out: Out,
    model: str,
    server: str,
    train_path: Path,
    train: DataCheck,
    held: DataCheck | None,
    o: HostedOptions,
    suffix: str | None,
) -> None:
    """The plan shown before the yes: counts, billed tokens, epochs, cost, warnings, the
    first example."""
    out.line(f"Fine-tune {model} on {server}")
    out.line(
        f"  {train_path.name}: {train.examples:,} examples, "
        f"{train.tokens_per_epoch:,} billed tokens per epoch"
    )
    if held is not None:
        out.line(f"  eval.jsonl:  {held.examples:,} examples (validation, not billed)")
    else:
        out.line("  eval.jsonl:  none (no validation loss will be reported)")
    epochs_note = "" if o.epochs is not None else " (auto: OpenAI's default for this size)"
    out.line(
        f"  epochs {train.epochs}{epochs_note}, batch size {o.batch_size or 'auto'}, "
        f"learning-rate multiplier {o.lr_multiplier or 'auto'}"
    )
    if train.cost_usd is not None:
        out.line(
            f"  billed tokens ~{train.billed_tokens:,}, estimated cost ~${train.cost_usd:,.2f}"
        )
    else:
        out.line(
            f"  billed tokens ~{train.billed_tokens:,}, cost unknown (no price for "
            f"{model} in the model table)"
        )
    out.line(f"  model suffix {suffix or '-'}, seed {o.seed if o.seed is not None else 'auto'}")
    for check in (train, held):
        if check is not None and check.warning_count:
            out.line(f"  {check.warning_count} warning(s) in {check.path.name}, first:")
            for w in check.warnings[:3]:
                out.line(f"    {w}")
    first = next(iter(read_jsonl(train_path)), None)
    if first:
        out.line("  first example:")
        for m in first.get("messages", [])[:4]:
            text = " ".join(str(m.get("content") or "").split())
            out.line(f"    {m.get('role')}: {text[:100]}{'...' if len(text) > 100 else ''}")


def check_pairs(path: Path, model: str, *, epochs: int | None = None) -> DataCheck:
    """check_data for a DPO pairs file: each pair's shape is checked (file:line), then both
    sides, as chat examples, go through the validate rules for the token count and cost."""
    import os
    import tempfile

    from distill.runs import atomic_write_jsonl
    from distill.stages.pairs import load_pairs
    from distill.validation.tally import default_epochs

    pairs = load_pairs(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pairs-check.", suffix=".jsonl")
    os.close(fd)
    try:
        atomic_write_jsonl(
            Path(tmp),
            (
                {"messages": [*p["messages"], {"role": "assistant", "content": p[side]}]}
                for p in pairs
                for side in ("chosen", "rejected")
            ),
        )
        sides = check_data(Path(tmp), model, epochs=1)
    finally:
        Path(tmp).unlink(missing_ok=True)
    n_epochs = epochs if epochs is not None else default_epochs(len(pairs))
    billed = sides.tokens_per_epoch * n_epochs
    per_token = (
        sides.cost_usd / sides.billed_tokens if sides.cost_usd and sides.billed_tokens else None
    )
    errors = [e.replace(tmp, f"{path} (one side of a pair)") for e in sides.errors]
    return DataCheck(
        path=path,
        examples=len(pairs),
        tokens_per_epoch=sides.tokens_per_epoch,
        epochs=n_epochs,
        billed_tokens=billed,
        cost_usd=billed * per_token if per_token is not None else None,
        errors=[e for e in errors if ": too-few-examples: " not in e],
        error_count=sum(1 for e in errors if ": too-few-examples: " not in e),
    )
