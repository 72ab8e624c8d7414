"""Pass 3 and the report: kept lines go out as they came (seeds as records when they are
included), removed ones to the rejected rows with their reason; dedupe_report.json says what
was found and how."""

from __future__ import annotations

import json
from typing import IO, Any

from distill.dedupe.job import STAGE, Job, is_chat, seed_record
from distill.dedupe.redis_lsh import redact
from distill.progress import progress


def write(job: Job, out: IO[str], reject_rows: list[tuple[dict[str, Any], str, str]]) -> None:
    """Kept lines go to `out` as they came (seeds as records when included); removed ones
    to `reject_rows` with their reason."""
    size = job.input_bytes
    with progress("dedupe: writing", size, unit="bytes") as meter:
        for ordinal, src, _lineno, line, read in job.lines():
            meter.update(read)
            reason = job.removed.get(ordinal)
            if reason is None:
                if src.is_seed:
                    if job.cfg.include_seeds:
                        out.write(
                            json.dumps(seed_record(json.loads(line)), ensure_ascii=False) + "\n"
                        )
                        job.result.kept += 1
                else:
                    out.write(line)
                    job.result.kept += 1
                continue
            if src.is_seed and not job.cfg.include_seeds:
                continue  # a seed left out of the pool is not an input example
            obj = json.loads(line)
            if is_chat(obj):
                rec = seed_record(obj) if src.is_seed else obj
            elif isinstance(obj, dict):
                rec = obj
            else:
                rec = {"id": job.ids[ordinal], "line": line.rstrip("\n")}
            reject_rows.append((rec, STAGE, reason))


def exact_clusters(job: Job) -> list[dict[str, Any]]:
    """The exact-duplicate groups as report clusters (a group whose first copy was itself
    removed as a near-duplicate keeps nothing)."""
    groups: dict[int, list[int]] = {}
    for o, first in job.exact_of.items():
        groups.setdefault(first, []).append(o)
    return [
        {
            "kind": "exact",
            "kept": job.ids[first],
            "also_kept": [],
            "removed": [job.ids[o] for o in sorted(dups)],
            "jaccard": [1.0] * len(dups),
            "size": len(dups) + 1,
            "has_seed": bool(job.is_seed[first]),
        }
        for first, dups in sorted(groups.items())
        if not job.removed.get(first)  # an exact copy of a removed near-duplicate
    ] + [
        {
            "kind": "exact",
            "kept": None,
            "also_kept": [],
            "removed": [job.ids[first], *[job.ids[o] for o in sorted(dups)]],
            "jaccard": [1.0] * (len(dups) + 1),
            "size": len(dups) + 1,
            "has_seed": bool(job.is_seed[first]),
        }
        for first, dups in sorted(groups.items())
        if job.removed.get(first)
    ]


def report(job: Job) -> dict[str, Any]:
    """dedupe_report.json: parameters, the LSH and its error rates, counts, every cluster and
    the largest ones with their texts."""
    r = job.result
    near = sorted(job.clusters, key=lambda c: (-c["size"], c["kept"]))
    largest = [
        {
            "kept": c["kept"],
            "size": c["size"],
            "has_seed": c["has_seed"],
            "kept_text": c["_texts"][0],
            "removed_examples": [
                {"id": i, "jaccard": j, "text": t}
                for i, j, t in zip(
                    c["removed"][:3], c["jaccard"][:3], c["_texts"][1:], strict=False
                )
            ],
        }
        for c in near[:10]
    ]
    r.largest = largest
    clusters = [{k: v for k, v in c.items() if k != "_texts"} for c in near]
    return {
        "parameters": {
            "threshold": job.cfg.threshold,
            "num_perm": job.cfg.num_perm,
            "shingle": f"character {job.cfg.ngram}-grams of normalised user+assistant turns",
            "seed": job.cfg.seed,
            "weights": list(job.cfg.weights),
            "include_seeds": job.cfg.include_seeds,
            "lsh_storage": redact(job.cfg.lsh_storage) or "memory",
            "representative": "every seed in a cluster, else the first example in input order",
            **(_index_parameters(job) if job.shared is not None else {}),
        },
        "lsh": {
            **job.params.describe(),
            "exact_check_floor": round(job.estimate_floor, 4),
            "exact_check": "candidates whose 8-bit MinHash estimate is at least the floor "
            "are compared with exact Jaccard of their shingle sets",
        },
        "counts": {
            "input": r.input,
            "seeds": r.seeds,
            "invalid": r.invalid,
            "exact_duplicates": r.exact,
            "near_duplicates": r.near,
            "near_copies_of_seeds": r.seed_copies,
            "removed": r.removed,
            "kept": r.kept,
            "candidate_pairs": r.candidate_pairs,
            "compared_exactly": r.estimated_pairs,
            "confirmed_pairs": r.confirmed_pairs,
            **({"duplicates_in_index": r.indexed} if job.shared is not None else {}),
            "clusters": len(job.clusters),
        },
        "largest_clusters": largest,
        "clusters": clusters + exact_clusters(job),
    }


def _index_parameters(job: Job) -> dict[str, Any]:
    shared = job.shared
    assert shared is not None
    return {
        "index": redact(job.cfg.index),
        "index_shard": shared.position or None,
        "against": job.cfg.against,
        "compared_with_shards": sorted(shared.visible),
        "representative": "an example is removed iff an earlier one (earlier in this input, "
        "seeds first, or in an earlier shard of the index; kept or removed) has the same text "
        "or is a confirmed near-duplicate; a seed only for an exact copy",
    }
