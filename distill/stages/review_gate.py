"""The gate before training: train applies the current review decisions to train.jsonl and
eval.jsonl itself (through the ids split writes beside them), so nothing a person rejected is
ever trained on or uploaded, whatever order the commands ran in."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import RunError
from distill.records import content_id
from distill.runs import (
    Run,
    atomic_write_json,
    atomic_write_jsonl,
    read_jsonl,
)
from distill.stages.review import (
    REVIEW_FILE,
    load_decisions,
)

# train.jsonl / eval.jsonl hold messages only (ready to upload); split writes train_ids.jsonl /
# eval_ids.jsonl beside them, one {"id", "meta"} per line in the same order. That is how the
# decisions made after `distill split` reach the files training reads.
SPLIT_FILES = ("train", "eval")
REJECT_PREFIX = "rejected in review"


@dataclass
class ReviewGate:
    """What the current decisions change in train.jsonl / eval.jsonl before training."""

    rows: dict[str, list[dict[str, Any]]]  # file -> [{"id", "meta", "messages"}] as they should be
    changed: bool  # the files on disk differ from `rows`
    rejected: list[tuple[dict[str, Any], str]]  # (record, reason): rejected, still in the files
    edited: list[str]  # ids whose line becomes the reviewer's edit
    restored: list[str]  # ids whose edit was withdrawn later: the original goes back
    returned: list[str]  # rejected earlier, accepted since: not in the files (split puts them back)
    unreviewed: int  # examples in the files (after the decisions) with no decision
    total: int  # examples in the files after the decisions
    relabel: bool = False  # only the ids files' meta.review changes (an accept, say)

    def summary(self) -> str:
        """One line for the terminal: what was applied (or that nothing had to be)."""
        if not self.changed:
            text = "review: train.jsonl and eval.jsonl already follow review.jsonl"
        else:
            parts = [f"dropped {len(self.rejected)} rejected", f"applied {len(self.edited)} edits"]
            if self.restored:
                parts.append(f"restored {len(self.restored)} originals")
            text = (
                f"review: {', '.join(parts)} in train.jsonl/eval.jsonl (the rejected are in "
                "rejected.jsonl; split_report.json updated)"
            )
        if self.returned:
            text += (
                f"; {len(self.returned)} examples rejected earlier and accepted since are not in "
                "them: rerun `distill split` to put them back"
            )
        return text


def _split_lines(path: Path) -> list[Any]:
    return [rec.get("messages") for rec in read_jsonl(path)]


def review_gate(run: Run) -> ReviewGate | None:
    """Plan what review.jsonl changes in train.jsonl / eval.jsonl (writes nothing); None when
    the split files are not there yet. RunError when the decisions cannot be mapped to lines."""
    paths = {name: run.file(f"{name}.jsonl") for name in SPLIT_FILES}
    if not all(p.exists() for p in paths.values()):
        return None
    decisions = load_decisions(run)
    lines = {name: _split_lines(p) for name, p in paths.items()}
    id_paths = {name: run.file(f"{name}_ids.jsonl") for name in SPLIT_FILES}
    if not all(p.exists() for p in id_paths.values()):
        if decisions:
            missing = next(p for p in id_paths.values() if not p.exists())
            raise RunError(
                f"{missing}: missing, so the review decisions cannot be matched to the lines of "
                f"{paths['train'].name}; run `distill split` to apply them"
            )
        total = sum(len(v) for v in lines.values())
        plain = {
            name: [{"id": None, "meta": {}, "messages": m} for m in v] for name, v in lines.items()
        }
        return ReviewGate(plain, False, [], [], [], [], total, total)

    originals: dict[str, Any] | None = None

    def original(rid: str, by_content: dict[str, Any]) -> Any:
        nonlocal originals
        if rid in by_content:
            return by_content[rid]
        if originals is None:  # read the examples under review once, only when needed
            originals = {}
            for name in ("deduped.jsonl", "generated.jsonl", "improve.jsonl"):
                if run.file(name).exists():
                    for rec in read_jsonl(run.file(name)):
                        if isinstance(rec.get("id"), str):
                            originals.setdefault(rec["id"], rec.get("messages"))
        return originals.get(rid)

    rows: dict[str, list[dict[str, Any]]] = {}
    rejected: list[tuple[dict[str, Any], str]] = []
    edited: list[str] = []
    restored: list[str] = []
    changed = relabel = False
    for name in SPLIT_FILES:
        ids = list(read_jsonl(id_paths[name]))
        current = lines[name]
        by_position = len(ids) == len(current)  # else a write was cut between the two files
        by_content = {content_id(m): m for m in current if isinstance(m, list)}
        out: list[dict[str, Any]] = []
        for i, row in enumerate(ids):
            rid = row.get("id")
            if not isinstance(rid, str):
                raise RunError(
                    f"{id_paths[name]}:{i + 1}: no id; run `distill split` to rewrite the split"
                )
            meta: dict[str, Any] = row["meta"] if isinstance(row.get("meta"), dict) else {}
            here = current[i] if by_position and isinstance(current[i], list) else None
            d = decisions.get(rid)
            kind = d["decision"] if d else None
            if d is not None and kind == "reject":
                msgs = here if here is not None else original(rid, by_content)
                reason = f"{REJECT_PREFIX}: {d.get('reason') or 'no reason given'}"
                rejected.append(({"id": rid, "messages": msgs, "meta": meta}, reason))
                changed = True
                continue
            if kind == "edit" and d and d.get("messages"):
                msgs = d["messages"]
                if here != msgs:
                    edited.append(rid)
            elif here is not None and content_id(here) == rid:
                msgs = here
            else:
                found = original(rid, by_content)
                if found is None and here is None:
                    raise RunError(
                        f"{paths[name]}: example {rid} listed in {id_paths[name].name} is in "
                        "neither this file nor deduped.jsonl; run `distill split` again"
                    )
                msgs = found if found is not None else here
                if here is not None and here != msgs:
                    restored.append(rid)
            meta = {**meta, "review": kind} if kind else meta
            out.append({"id": rid, "meta": meta, "messages": msgs})
            if here != msgs:
                changed = True
            elif row.get("meta") != meta:
                relabel = True
        if not by_position:
            changed = True
        rows[name] = out

    kept_ids = {r["id"] for v in rows.values() for r in v}
    returned: list[str] = []
    rejected_file = run.file("rejected.jsonl")
    if rejected_file.exists() and decisions:
        for rec in read_jsonl(rejected_file):
            rid = rec.get("id")
            if (
                rec.get("stage") == "review"
                and isinstance(rid, str)
                and rid not in kept_ids
                and rid not in returned
                and decisions.get(rid, {}).get("decision") in ("accept", "edit")
            ):
                returned.append(rid)
    unreviewed = sum(1 for i in kept_ids if i not in decisions)
    return ReviewGate(
        rows, changed, rejected, edited, restored, returned, unreviewed, len(kept_ids), relabel
    )


def apply_review_gate(run: Run, *, require_review: bool = False) -> ReviewGate | None:
    """Make train.jsonl / eval.jsonl follow the current review decisions before training: the
    rejected leave both files (to rejected.jsonl, stage "review"), edits replace their lines.
    Every file is rewritten atomically, ids first, so a kill at any point leaves a state the
    next call completes. With `require_review`, RunError while any example has no decision."""
    gate = review_gate(run)
    if gate is None:
        return None
    if require_review and gate.unreviewed:
        raise RunError(
            f"{gate.unreviewed} of the {gate.total} examples in train.jsonl and eval.jsonl have "
            "no review decision; run `distill review` (or `distill review --accept-unflagged`) "
            "first, or drop --require-review"
        )
    if not (gate.changed or gate.relabel):
        return gate
    already = set()
    if run.file("rejected.jsonl").exists():
        already = {
            r.get("id")
            for r in read_jsonl(run.file("rejected.jsonl"))
            if r.get("stage") == "review"
        }
    run.reject((rec, "review", why) for rec, why in gate.rejected if rec["id"] not in already)
    for name, rows in gate.rows.items():
        atomic_write_jsonl(
            run.file(f"{name}_ids.jsonl"), ({"id": r["id"], "meta": r["meta"]} for r in rows)
        )
        if gate.changed:
            atomic_write_jsonl(
                run.file(f"{name}.jsonl"), ({"messages": r["messages"]} for r in rows)
            )
    if gate.changed:
        _record_gate(run, gate)
    return gate


def _record_gate(run: Run, gate: ReviewGate) -> None:
    """split_report.json and the manifest say what the gate changed, and when."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    n_edited = sum(1 for v in gate.rows.values() for r in v if r["meta"].get("review") == "edit")
    dropped = {rec["id"] for rec, _ in gate.rejected}
    applied = {
        "at": now,
        "by": "distill train",
        "rejected": sorted(dropped),
        "edited": gate.edited,
        "restored": gate.restored,
    }
    path = run.file("split_report.json")
    try:
        report = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        report = {}
    if not isinstance(report, dict):
        report = {}
    counts = report.setdefault("counts", {})
    counts["review_rejected"] = int(counts.get("review_rejected") or 0) + len(dropped)
    counts["review_edited"] = n_edited
    for name, rows in gate.rows.items():
        counts[name] = len(rows)
        report[f"{name}_ids"] = [r["id"] for r in rows]
    leakage = report.get("leakage")
    if isinstance(leakage, dict):
        for key in ("max_jaccard_to_train", "nearest_train"):
            if isinstance(leakage.get(key), dict):
                leakage[key] = {k: v for k, v in leakage[key].items() if k not in dropped}
    report.setdefault("review_applied", []).append(applied)
    atomic_write_json(path, report)
    split = run.stage("split")
    run.record_stage(
        "split",
        split.get("status", "done"),
        train=len(gate.rows["train"]),
        eval=len(gate.rows["eval"]),
        review_rejected=int(split.get("review_rejected") or 0) + len(dropped),
        review_edited=n_edited,
        review_applied=now,
    )


TRAIN_APPLIES = "`distill train` applies them before training (or rerun `distill split`)"


def pending_review_line(run: Run, then: str = TRAIN_APPLIES) -> str | None:
    """A line for `status` and `run` when review.jsonl holds decisions that train.jsonl /
    eval.jsonl do not follow yet; None when they do (or there is nothing to compare)."""
    review = run.file(REVIEW_FILE)
    train = run.file("train.jsonl")
    if not review.exists() or not train.exists():
        return None
    try:
        gate = review_gate(run)
    except RunError:
        if review.stat().st_mtime <= train.stat().st_mtime:
            return None
        return (
            f"{review} is newer than {train} and cannot be matched to its lines; run "
            "`distill split` before training"
        )
    if gate is None or not gate.changed:
        return None
    return (
        f"{review}: decisions newer than {train.name}: {len(gate.rejected)} rejected and "
        f"{len(gate.edited) + len(gate.restored)} edited examples are not applied yet; {then}"
    )
