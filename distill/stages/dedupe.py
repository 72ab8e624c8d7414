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

import hashlib
import time
from pathlib import Path
from typing import Any

from distill.dedupe import clusters, earlier, index, output
from distill.dedupe.job import STAGE, DedupeConfig, DedupeResult, Job, Source
from distill.dedupe.redis_lsh import redact
from distill.dedupe.shared_index import SharedIndex
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
from distill.runs import Run, atomic_file, atomic_write_json, atomic_write_jsonl, sha256_file


def _dedupe(
    sources: list[Source], out_path: Path, config: DedupeConfig
) -> tuple[Job, list[tuple[dict[str, Any], str, str]], dict[str, Any]]:
    """The three passes, timed; returns the job, the rejected rows and the report."""
    job = Job(sources, config)
    seconds = job.result.seconds
    if config.index:
        job.shared = open_index(job, sources)
    try:
        t0 = time.perf_counter()
        try:
            pairs = index.index(job)
        except DistillError as e:
            if job.shared is not None and not config.against:
                job.shared.mark("failed", error=str(e))  # later shards wait and name it
            raise
        seconds["hash_and_index"] = time.perf_counter() - t0
        if job.shared is not None and not config.against:
            job.shared.mark("indexed")  # every example of this shard is in the index now
        t0 = time.perf_counter()
        clusters.confirm(job, pairs)
        seconds["confirm"] = time.perf_counter() - t0
        if job.shared is not None:
            t0 = time.perf_counter()
            job.shared.wait_for_earlier(config.index_wait)
            seconds["wait_for_earlier_shards"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            earlier.check(job)
            seconds["check_index"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows: list[tuple[dict[str, Any], str, str]] = []
        with atomic_file(out_path) as out:
            output.write(job, out, rows)
        seconds["write"] = time.perf_counter() - t0
        if job.shared is not None and not config.against:
            job.shared.mark("done", kept=job.result.kept, removed=job.result.removed)
    finally:
        if job.shared is not None:
            job.shared.close()
    report = output.report(job)
    report["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    return job, rows, report


def open_index(job: Job, sources: list[Source]) -> SharedIndex:
    """Connect to --index, check its MinHash settings and take this input's place in it: a
    rerun of the same input (same files, same content) gets the place it had before."""
    cfg = job.cfg
    if cfg.lsh_storage:
        raise UsageError("--index and --lsh-storage exclude each other; the index is an LSH itself")
    settings = {
        "layout": 1,
        "text": "normalised (NFKC, case-folded, whitespace collapsed) user and assistant turns",
        "threshold": cfg.threshold,
        "num_perm": cfg.num_perm,
        "seed": cfg.seed,
        "ngram": cfg.ngram,
        "bands": job.params.bands,
        "rows": job.params.rows,
        "weights": list(cfg.weights),
    }
    assert cfg.index is not None
    shared = SharedIndex(cfg.index, settings, cfg.against)
    label = str(sources[-1].path.resolve())
    h = hashlib.sha256(label.encode())
    for src in sources:
        h.update(f"\n{src.is_seed}:{sha256_file(src.path)}".encode())
    try:
        shared.open(h.hexdigest(), label)
    except BaseException:
        shared.close()
        raise
    job.result.shard, job.result.index_name = shared.position, shared.name
    return shared


def drop_shard(url: str, position: int) -> str:
    """Mark shard `position` of the index dropped: later shards neither wait for it nor compare
    against it (for a shard that failed or was killed and will not be rerun as it was)."""
    shared = SharedIndex(url, {}, against=True, check=False)
    try:
        shared.drop(position)
    finally:
        shared.close()
    return f"index {shared.name}: shard {position} dropped; later runs leave it out"


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
        **(
            {"index": redact(config.index), "index_shard": r.shard, "in_index": r.indexed}
            if config.index
            else {}
        ),
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
    "drop_shard",
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
