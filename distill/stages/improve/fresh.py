"""New examples against everything the run already holds: an exact or near copy of a seed, of
a deduped example or of an earlier round's addition teaches nothing new, and one close to a
held-out example would leak the eval set into training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.minhash import example_text, shingle_sets, signatures
from distill.runs import Run, read_jsonl
from distill.stages.split import SplitConfig, similar_pairs

STAGE = "improve"


def _known(run: Run, seeds: Path | None) -> tuple[list[dict[str, Any]], list[bool]]:
    """(records, held out?) for every example the run holds: eval.jsonl's (held out), the
    seeds, deduped.jsonl and improve.jsonl."""
    records: list[dict[str, Any]] = []
    held: list[bool] = []
    eval_path = run.file("eval.jsonl")
    if eval_path.exists():
        ids = run.file("eval_ids.jsonl")
        names = [r.get("id") for r in read_jsonl(ids)] if ids.exists() else []
        for i, rec in enumerate(read_jsonl(eval_path)):
            rid = names[i] if i < len(names) else f"eval.jsonl:{i + 1}"
            records.append({"id": rid, "messages": rec.get("messages")})
            held.append(True)
    for path in (seeds, run.file("deduped.jsonl"), run.file("improve.jsonl")):
        if path is not None and path.exists():
            for n, rec in enumerate(read_jsonl(path), 1):
                records.append({"id": rec.get("id") or f"{path.name}:{n}", **rec})
                held.append(False)
    return records, held


def keep_fresh(
    run: Run,
    new: list[dict[str, Any]],
    *,
    seeds: Path | None,
    threshold: float,
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str, str]]]:
    """(kept, rejected rows) of `new`, in order: rejected when its Jaccard (character
    shingles, as dedupe) to a held-out example reaches split's grouping threshold (0.5), or
    to any other example of the run, or to an earlier new one, reaches `threshold`."""
    if not new:
        return [], []
    known, held = _known(run, seeds)
    leak = SplitConfig().group_threshold
    records = known + new
    texts = [example_text(r.get("messages")) for r in records]
    sets = [frozenset(s.tolist()) for s in shingle_sets(texts)]
    sigs = signatures(texts, SplitConfig().num_perm, 3)
    floor = min(leak, threshold)
    first = len(known)
    closest: dict[int, list[tuple[float, int]]] = {}
    for a, b, jac in similar_pairs(sets, sigs, floor, floor - 0.15):
        i, j = min(a, b), max(a, b)
        if j >= first:  # the new one is j, compared with a known or an earlier new one
            closest.setdefault(j, []).append((jac, i))
    seen: dict[str, int] = {}
    for i in range(first):
        seen.setdefault(texts[i], i)
    kept, rejected = [], []
    dropped: set[int] = set()
    for k, rec in enumerate(new):
        j = first + k
        reason = None
        if texts[j] in seen:
            i = seen[texts[j]]
            reason = f"exact copy of {'held-out example ' if i < first and held[i] else ''}"
            reason += str(records[i]["id"])
        for jac, i in sorted(closest.get(j, []), reverse=True):
            if reason is not None or i in dropped:
                continue
            if i < first and held[i] and jac >= leak:
                reason = (
                    f"too close to held-out example {records[i]['id']} (jaccard {jac:.2f}): "
                    "training on it would leak the eval set"
                )
            elif jac >= threshold:
                where = "added in this round" if i >= first else "already in the run"
                reason = f"near-duplicate of {records[i]['id']}, {where} (jaccard {jac:.2f})"
        if reason is None:
            kept.append(rec)
            seen.setdefault(texts[j], j)
        else:
            dropped.add(j)
            rejected.append((rec, STAGE, reason))
    return kept, rejected
