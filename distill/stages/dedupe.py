"""Remove exact and near-duplicate examples: repeats teach a student to parrot.

Exact duplicates are found by a hash of the normalised text; near-duplicates by MinHash LSH
over character n-gram shingles of the normalised user and assistant turns (the system prompt,
the same everywhere, is left out; see distill.minhash). LSH candidate pairs whose 8-bit
(b-bit) MinHash estimate is within 4.5 standard deviations of the threshold or above are
confirmed with the exact Jaccard similarity of their shingle sets, joined into clusters by
union-find, and each cluster keeps its seeds if it has any, else the example that comes first
in the input.

Three streaming passes over the input (distill.dedupe): hash and index (exact duplicates
settled here), confirm candidates (only their lines are parsed again), write. Memory holds
~250 bytes per example plus the shingle sets of candidates still waiting for their partner.
`--lsh-storage redis://HOST:PORT` keeps the LSH index in Redis instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from distill.dedupe import clusters, index, output
from distill.dedupe.job import STAGE, DedupeConfig, DedupeResult, Job, Source
from distill.errors import DistillError, InputError, UsageError
from distill.minhash import (
    LshParams,
    UnionFind,
    band_keys,
    candidate_pairs,
    estimate_jaccard,
    example_text,
    jaccard,
    lsh_params,
    normalise,
    recall_params,
    shingle_hash32,
    shingle_hash64,
    shingle_sets,
    shingles,
    signatures,
)
from distill.rejections import drop_stage_rejections
from distill.runs import Run, atomic_file, atomic_write_json, atomic_write_jsonl


def _dedupe(
    sources: list[Source], out_path: Path, config: DedupeConfig
) -> tuple[Job, list[tuple[dict[str, Any], str, str]], dict[str, Any]]:
    """The three passes, timed; returns the job, the rejected rows and the report."""
    job = Job(sources, config)
    seconds = job.result.seconds
    t0 = time.perf_counter()
    pairs = index.index(job)
    seconds["hash_and_index"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clusters.confirm(job, pairs)
    seconds["confirm"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows: list[tuple[dict[str, Any], str, str]] = []
    with atomic_file(out_path) as out:
        output.write(job, out, rows)
    seconds["write"] = time.perf_counter() - t0
    report = output.report(job)
    report["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    return job, rows, report


def seeds_path_for(run: Run, seeds: Path | None) -> Path | None:
    """--seeds, else the seeds file recorded in the manifest, else None."""
    if seeds is not None:
        if not seeds.exists():
            raise InputError(f"{seeds}: seeds file not found; pass --seeds PATH to a chat JSONL")
        return seeds
    recorded = run.manifest.get("inputs", {}).get("seeds", {})
    path = recorded.get("path") if isinstance(recorded, dict) else None
    if not path:
        return None
    p = Path(path)
    if not p.exists():
        raise InputError(
            f"{p}: seeds file recorded in {run.manifest_path} is missing; pass --seeds FILE"
        )
    return p


def dedupe_run(run: Run, config: DedupeConfig, seeds: Path | None = None) -> DedupeResult:
    """generated.jsonl -> deduped.jsonl + dedupe_report.json; removed examples to rejected.jsonl."""
    generated = run.require("generated.jsonl", "run `distill generate` first")
    seeds_file = seeds_path_for(run, seeds)
    sources = ([Source(seeds_file, True)] if seeds_file else []) + [Source(generated, False)]
    run.record_stage(STAGE, "running")
    try:
        job, rows, report = _dedupe(sources, run.file("deduped.jsonl"), config)
    except DistillError as e:
        run.record_stage(STAGE, "failed", error=str(e))
        raise
    drop_stage_rejections(run, STAGE)
    if not seeds_file:
        job.result.warnings.append(
            "no seeds file (none in the manifest, no --seeds): near-copies of seeds not checked"
        )
    report["inputs"] = {
        "generated": str(generated),
        "seeds": str(seeds_file) if seeds_file else None,
    }
    report["warnings"] = job.result.warnings
    run.reject(rows)
    atomic_write_json(run.file("dedupe_report.json"), report)
    r = job.result
    r.output, r.rejected, r.report = (
        run.file("deduped.jsonl"),
        run.file("rejected.jsonl"),
        run.file("dedupe_report.json"),
    )
    run.record_stage(
        STAGE,
        "done",
        input=r.input,
        seeds=r.seeds,
        kept=r.kept,
        removed=r.removed,
        exact=r.exact,
        near=r.near,
        seed_copies=r.seed_copies,
        invalid=r.invalid,
        threshold=config.threshold,
        num_perm=config.num_perm,
        bands=job.params.bands,
        rows=job.params.rows,
    )
    return r


def rejected_path_for(output: Path) -> Path:
    """out.jsonl -> out.rejected.jsonl (beside the output)."""
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(stem + ".rejected.jsonl")


def dedupe_file(
    input: Path, output: Path, config: DedupeConfig, seeds: Path | None = None
) -> DedupeResult:
    """Any chat JSONL -> the same lines without duplicates; removed lines beside the output
    as <output>.rejected.jsonl and the report as <output>.dedupe_report.json."""
    if not input.exists():
        raise InputError(f"{input}: file not found; pass --input PATH to a chat JSONL")
    if seeds is not None and not seeds.exists():
        raise InputError(f"{seeds}: seeds file not found; pass --seeds PATH to a chat JSONL")
    if output.resolve() == input.resolve():
        raise UsageError(f"--output {output}: same file as --input; write somewhere else")
    sources = ([Source(seeds, True)] if seeds else []) + [Source(input, False)]
    job, rows, report = _dedupe(sources, output, config)
    rejected = rejected_path_for(output)
    atomic_write_jsonl(
        rejected,
        (
            {
                "id": rec.get("id"),
                "stage": st,
                "reason": why,
                "example": rec,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            for rec, st, why in rows
        ),
    )
    report_path = output.with_name(rejected.name.replace(".rejected.jsonl", ".dedupe_report.json"))
    report["inputs"] = {"input": str(input), "seeds": str(seeds) if seeds else None}
    atomic_write_json(report_path, report)
    r = job.result
    r.output, r.rejected, r.report = output, rejected, report_path
    return r


__all__ = [  # the MinHash names stay importable from here for older callers
    "DedupeConfig",
    "DedupeResult",
    "LshParams",
    "UnionFind",
    "band_keys",
    "candidate_pairs",
    "dedupe_file",
    "dedupe_run",
    "drop_stage_rejections",
    "estimate_jaccard",
    "example_text",
    "jaccard",
    "lsh_params",
    "normalise",
    "recall_params",
    "rejected_path_for",
    "seeds_path_for",
    "shingle_hash32",
    "shingle_hash64",
    "shingle_sets",
    "shingles",
    "signatures",
]
