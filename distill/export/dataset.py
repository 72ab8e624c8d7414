"""The run's examples for use outside distill: a Hugging Face dataset folder, Parquet, JSONL
with the meta, or the upload-ready OpenAI files with their validate report.

What is exported is what training reads: train.jsonl and eval.jsonl as the current review
decisions make them (the review gate, read-only here), so an example a person rejected is never
exported and an edited one is exported as edited. The held-out split is named `test`: that is
the name `datasets` gives a file called eval or test, so the folder loads the same way with or
without its card.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.errors import DistillError, RunError, UsageError
from distill.lora.checkpoint import replace_dir
from distill.runs import Run, atomic_write_json, atomic_write_jsonl, sha256_file
from distill.stages.review_gate import REJECT_PREFIX, ReviewGate, review_gate

DATASET_FORMATS = ("hf", "parquet", "jsonl", "openai")
# run file -> split name outside distill
SPLIT_NAMES = {"train": "train", "eval": "test"}
MARKER = "export.json"  # in every export folder: what was exported from which run
# meta keys first in this order, the rest as they come; `review` is always a column
META_FIRST = ("topic", "persona", "intent", "turns", "source", "teacher", "review")
# message keys that hold objects: a Parquet column of JSON text
JSON_MESSAGE_KEYS = ("tool_calls", "function_call")
RULE_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)+")  # a style rule or problem code


@dataclass
class Exported:
    """What an export wrote: the folder, its files, rows per split, and anything to say."""

    folder: Path
    files: list[Path]
    rows: dict[str, int]
    notes: list[str] = field(default_factory=list)
    valid: bool = True  # openai: both files pass `distill validate`


def gated_rows(run: Run) -> tuple[dict[str, list[dict[str, Any]]], ReviewGate]:
    """{"train": [...], "test": [...]} rows ({"id", "meta", "messages"}) as training sees them."""
    gate = review_gate(run)
    if gate is None:
        missing = next(
            run.file(f"{n}.jsonl") for n in SPLIT_NAMES if not run.file(f"{n}.jsonl").exists()
        )
        raise RunError(f"{missing}: missing; run `distill split` first")
    return {SPLIT_NAMES[name]: rows for name, rows in gate.rows.items()}, gate


def gate_notes(gate: ReviewGate) -> list[str]:
    notes = []
    if gate.changed:
        notes.append(
            f"review: {len(gate.rejected)} rejected left out and {len(gate.edited)} edits applied "
            "that train.jsonl/eval.jsonl do not follow yet (the run's files are unchanged)"
        )
    if gate.returned:
        notes.append(
            f"review: {len(gate.returned)} examples rejected earlier and accepted since are not "
            "in the split; rerun `distill split` to include them"
        )
    return notes


def default_folder(run: Run, fmt: str) -> Path:
    return run.path / "export" / fmt


def export_dataset(
    run: Run, fmt: str, out: Path | None = None, license: str = "unknown"
) -> Exported:
    """Write the gated splits as `fmt` into `out` (default <run>/export/<fmt>/), whole or not at
    all: the folder is built beside its target and swapped into place."""
    if fmt not in DATASET_FORMATS:
        raise UsageError(f"unknown dataset format {fmt!r}; choose one of {DATASET_FORMATS}")
    splits, gate = gated_rows(run)
    folder = out or default_folder(run, fmt)
    with export_folder(folder) as tmp:
        notes = gate_notes(gate)
        valid = True
        if fmt == "hf":
            from distill.export.card import dataset_card

            written, sizes = write_parquet(splits, tmp / "data", "{split}-00000-of-00001.parquet")
            (tmp / "README.md").write_text(
                dataset_card(run, splits, gate, license, written, sizes), encoding="utf-8"
            )
        elif fmt == "parquet":
            written, _ = write_parquet(splits, tmp, "{split}.parquet")
        elif fmt == "jsonl":
            written = {
                s: tmp / f"{s}.jsonl" for s in splits
            }  # the whole record: id, messages, meta
            for s, rows in splits.items():
                atomic_write_jsonl(written[s], rows)
        else:
            written, valid, lines = write_openai(splits, tmp, folder, run)
            notes += lines
        write_marker(tmp, run, fmt, rows={s: len(r) for s, r in splits.items()})
    files = [folder / p.relative_to(tmp) for p in written.values()]
    if fmt == "hf":
        files.append(folder / "README.md")
    if fmt == "openai":
        files.append(folder / "validate_report.json")
    return Exported(folder, files, {s: len(r) for s, r in splits.items()}, notes, valid)


@contextmanager
def export_folder(target: Path) -> Iterator[Path]:
    """A temp folder beside `target` that replaces it whole on success (removed on failure).
    An existing target that is not an earlier export (no export.json) is never replaced."""
    t = target
    if t.exists() and (not t.is_dir() or (any(t.iterdir()) and not (t / MARKER).exists())):
        raise UsageError(
            f"{t}: exists and is not an earlier `distill export` (no {MARKER}); pass another "
            "--out or remove it"
        )
    t.parent.mkdir(parents=True, exist_ok=True)
    for stale in t.parent.glob(f".{t.name}.*"):  # left by an export that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=t.parent, prefix=f".{t.name}."))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # a folder to share, not mkdtemp's private 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, t)


def write_marker(folder: Path, run: Run, fmt: str, **facts: Any) -> None:
    """export.json: the format, the run, when, `facts`, and the sha256 of every file."""
    import time

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    atomic_write_json(
        folder / MARKER,
        {
            "format": fmt,
            "run": str(run.path.resolve()),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **facts,
            "files": {str(p.relative_to(folder)): sha256_file(p) for p in files},
        },
    )


# -- Parquet ------------------------------------------------------------------------------


def write_parquet(
    splits: dict[str, list[dict[str, Any]]], folder: Path, pattern: str
) -> tuple[dict[str, Path], dict[str, int]]:
    """One Parquet file per split, all with the same columns (id, messages, then the meta);
    returns the files and each split's size in memory (estimated)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = frames_for(splits)
    out, sizes = {}, {}
    for s, frame in frames.items():
        out[s] = folder / pattern.format(split=s)
        frame.write_parquet(out[s])
        sizes[s] = int(frame.estimated_size())
    return out, sizes


def frames_for(splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """polars DataFrames with one schema across the splits (a column is typed by every row)."""
    import polars as pl

    every = [r for rows in splits.values() for r in rows]
    msg_fields = message_fields(every)
    metas = meta_columns(every)
    schema: dict[str, Any] = {
        "id": pl.Utf8,
        "messages": pl.List(pl.Struct(msg_fields)),
        **{col: dtype for col, (_, dtype, _) in metas.items()},
    }
    out = {}
    for s, rows in splits.items():
        data: dict[str, list[Any]] = {
            "id": [r["id"] for r in rows],
            "messages": [[_message(m, msg_fields) for m in r["messages"]] for r in rows],
        }
        for col, (key, _, as_json) in metas.items():
            data[col] = [_meta_value(r["meta"].get(key), as_json) for r in rows]
        out[s] = pl.DataFrame(data, schema=schema)
    return out


def message_fields(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import polars as pl

    seen = {k for r in rows for m in r["messages"] if isinstance(m, dict) for k in m}
    fields: dict[str, Any] = {"role": pl.Utf8, "content": pl.Utf8}
    for key, dtype in (("weight", pl.Int64), ("name", pl.Utf8), ("tool_call_id", pl.Utf8)):
        if key in seen:
            fields[key] = dtype
    for key in JSON_MESSAGE_KEYS:
        if key in seen:
            fields[key] = pl.Utf8
    return fields


def _message(m: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (json.dumps(m[k], ensure_ascii=False) if k in JSON_MESSAGE_KEYS and k in m else m.get(k))
        for k in fields
    }


def meta_columns(rows: list[dict[str, Any]]) -> dict[str, tuple[str, Any, bool]]:
    """column -> (meta key, polars type, written as JSON text): one column per meta key, typed
    by its values (text, whole numbers, numbers, booleans; anything else as JSON text)."""
    import polars as pl

    order: dict[str, None] = {k: None for k in META_FIRST}
    for r in rows:
        order.update((k, None) for k in r["meta"])
    out = {}
    for key in order:
        values = [r["meta"][key] for r in rows if r["meta"].get(key) is not None]
        if key not in META_FIRST and not values:
            continue
        kinds = {type(v) for v in values}
        as_json = False
        if kinds <= {str}:
            dtype: Any = pl.Utf8
        elif kinds <= {bool}:
            dtype = pl.Boolean
        elif kinds <= {int}:
            dtype = pl.Int64
        elif kinds <= {int, float}:
            dtype = pl.Float64
        else:
            dtype, as_json = pl.Utf8, True
        column = f"meta_{key}" if key in ("id", "messages") else key
        out[column] = (key, dtype, as_json)
    return out


def _meta_value(value: Any, as_json: bool) -> Any:
    if value is None or not as_json:
        return value
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# -- OpenAI -------------------------------------------------------------------------------


def write_openai(
    splits: dict[str, list[dict[str, Any]]], folder: Path, final: Path, run: Run
) -> tuple[dict[str, Path], bool, list[str]]:
    """train.jsonl / eval.jsonl with messages only (what a fine-tuning job uploads) and
    validate_report.json (`distill validate --format json` of each, against the run's style
    spec if any). Valid as hosted training judges it: a short eval file is only a warning."""
    from distill.evaluation.inputs import load_style
    from distill.hosted.plan import check_data
    from distill.validation.scan import validate_file

    try:
        style = load_style(run)
    except DistillError:  # a moved or broken spec: the format checks still run
        style = None
    written = {s: folder / f"{'eval' if s == 'test' else s}.jsonl" for s in splits}
    reports, lines, valid = {}, [], True
    for s, rows in splits.items():
        path = written[s]
        atomic_write_jsonl(path, ({"messages": r["messages"]} for r in rows))
        report = validate_file(path, style=style)
        reports[path.name] = {**report.to_dict(), "file": str(final / path.name)}
        check = check_data(path, report.model, held_out=s != "train")
        valid = valid and not check.error_count
        state = f"{check.error_count} errors" if check.error_count else "valid"
        line = f"{path.name}: {state}, {check.warning_count} warnings"
        if s == "train" and check.cost_usd is not None:
            line += (
                f"; {check.billed_tokens:,} billed tokens on {report.model}, about "
                f"${check.cost_usd:.2f}"
            )
        if check.errors:
            line += f" (first: {check.errors[0].replace(str(folder), str(final))})"
        lines.append(line)
    atomic_write_json(folder / "validate_report.json", reports)
    return written, valid, lines


def rejected_by_reason(run: Run, gate: ReviewGate | None = None) -> Counter[str]:
    """rejected.jsonl counted by `stage: kind of reason`, plus what the review gate leaves
    out that is not written there yet."""
    from distill.runs import read_jsonl

    counts: Counter[str] = Counter()
    seen: set[Any] = set()
    path = run.file("rejected.jsonl")
    if path.exists():
        for r in read_jsonl(path):
            if r.get("stage") == "review":  # a person's words: counted, not itemised
                seen.add(r.get("id"))
                counts[f"review: {REJECT_PREFIX}"] += 1
            else:
                counts[f"{r.get('stage', '?')}: {reason_kind(str(r.get('reason', '')))}"] += 1
    for rec, _ in gate.rejected if gate else []:
        if rec.get("id") not in seen:
            counts[f"review: {REJECT_PREFIX}"] += 1
    return counts


def reason_kind(reason: str) -> str:
    """The kind of a rejection reason without the detail that names the example: its text
    before the first colon, " of" or "(" (numbers as N), and the rule it names, if any
    ("invalid after 3 attempt(s): reply: no-ai-talk: ..." -> "invalid after N attempt(s):
    no-ai-talk")."""
    parts = [p.strip() for p in reason.split(": ")]
    head = re.split(r" of | \(", parts[0])[0]  # "near-duplicate of 3f2a (jaccard 0.91)"
    head = re.sub(r"\d+", "N", head)[:60] or "no reason given"
    rule = next((p for p in parts[1:3] if RULE_NAME.fullmatch(p)), None)
    return f"{head}: {rule}" if rule else head
