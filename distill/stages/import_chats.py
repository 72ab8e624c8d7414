"""Start a run from chat data you already have (a strong teacher's output, support logs you
cleaned, another run's train.jsonl), so dedupe, split, review, train and eval work on it as on
generated data.

Each line is checked with the same rules as `distill validate`; a line that breaks them goes to
rejected.jsonl with its file:line and reason (never silently dropped). The kept lines become
the run's generated.jsonl with content-hash ids and `meta.source = "import"`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill import runs
from distill.errors import InputError, RunError
from distill.records import Example
from distill.runs import Run, atomic_write_jsonl, sha256_file
from distill.stages.validate import check_example

STAGE = "import"
# keys distill's own files carry beside the upload format; kept as the example's id and meta
OWN_KEYS = ("id", "meta")


@dataclass
class ImportResult:
    run: Run
    lines: int
    kept: int
    rejected: int
    without_system_prompt: int
    style: Path | None


def default_style(data: Path) -> Path | None:
    """<data>.style.toml beside the data, as for seeds; None when there is none."""
    p = data.with_name(data.name.split(".")[0] + ".style.toml")
    return p if p.exists() else None


def import_chats(
    data: Path,
    *,
    name: str | None = None,
    style: Path | None = None,
    outputs: Path | None = None,
) -> ImportResult:
    """Check every line of `data` and write the valid ones as a new run's generated.jsonl."""
    data = Path(data)
    if not data.is_file():
        raise InputError(f"{data}: no such file; pass a chat JSONL file ({{'messages': [...]}})")
    style = style if style is not None else default_style(data)
    if style is not None and not Path(style).is_file():
        raise InputError(f"{style}: style spec not found; pass --style PATH or leave it out")
    if style is not None:
        from distill.style import StyleSpec

        StyleSpec.load(Path(style))  # a bad spec is one clear line now, not at eval time

    kept: list[dict[str, Any]] = []
    rejected: list[tuple[dict[str, Any], str, str]] = []
    seen_ids: set[str] = set()
    lines = 0
    with open(data, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            lines += 1
            where = f"{data}:{lineno}"
            obj, reason = _parse(raw)
            if obj is not None and reason is None:
                upload = {k: v for k, v in obj.items() if k not in OWN_KEYS}
                errors = [p for p in check_example(upload) if p.severity == "error"]
                if errors:
                    reason = "; ".join(f"{p.code}: {p.message}" for p in errors[:3])
            if obj is None or reason is not None:
                raw_text: Any = raw[:2000].decode("utf-8", "replace") if obj is None else obj
                rec = {
                    "id": f"line-{lineno}",
                    "messages": [],
                    "meta": {"line": lineno, "raw": raw_text},
                }
                rejected.append((rec, STAGE, f"{where}: {reason}"))
                continue
            meta: dict[str, Any] = obj["meta"] if isinstance(obj.get("meta"), dict) else {}
            ex = Example.from_chat(
                {"messages": obj["messages"]}, **meta, source="import", line=lineno
            )
            if ex.id in seen_ids:
                rejected.append(
                    (ex.to_record(), STAGE, f"{where}: exact duplicate of an earlier line")
                )
                continue
            seen_ids.add(ex.id)
            kept.append(ex.to_record())
    if not kept:
        first = rejected[0][2] if rejected else f"{data}: the file is empty"
        raise InputError(
            f"no valid example in {data} ({len(rejected)} rejected; first: {first}); "
            f"`distill validate {data}` lists every problem"
        )

    run_name = name or data.name.split(".")[0]
    _refuse_generated_run(Run((outputs or runs.OUTPUTS) / run_name), data)
    run = Run.create(run_name, outputs=outputs)  # now the current run
    from distill.stages.dedupe import drop_stage_rejections

    drop_stage_rejections(run, STAGE)
    run.reject(rejected)
    atomic_write_jsonl(run.file("generated.jsonl"), kept)
    inputs: dict[str, Any] = {"data": {"path": str(data.resolve()), "sha256": sha256_file(data)}}
    if style is not None:
        inputs["style"] = {"path": str(Path(style).resolve()), "sha256": sha256_file(style)}
    run.update_manifest(inputs=inputs, config={"source": "import"})
    without_system = sum(1 for r in kept if r["messages"][0]["role"] != "system")
    run.record_stage(
        STAGE,
        "done",
        lines=lines,
        kept=len(kept),
        rejected=len(rejected),
        without_system_prompt=without_system,
    )
    return ImportResult(run, lines, len(kept), len(rejected), without_system, style)


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None) or (None/obj, reason) for one line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"invalid-utf8: byte {e.start} is not UTF-8; save the file as UTF-8"
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        return None, f"invalid-json: {getattr(e, 'msg', 'nested too deep')}"
    if not isinstance(obj, dict):
        return None, "not-object: a line must be one JSON object with a messages list"
    return obj, None


def _refuse_generated_run(run: Run, data: Path) -> None:
    """Never overwrite a run that generate wrote (paid work) with imported data."""
    if not run.file("generated.jsonl").exists():
        return
    if (run.manifest.get("config") or {}).get("source") == "import":
        return
    raise RunError(
        f"{run.path} already holds generated data; pass --name NEW to import {data} into a new run"
    )
