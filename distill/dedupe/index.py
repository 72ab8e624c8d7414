"""Pass 1: hash every example (in worker processes for big inputs), settle exact duplicates,
and find the LSH candidate pairs whose MinHash estimate is near the threshold or above."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.dedupe.job import Job, is_chat, record_id
from distill.dedupe.redis_lsh import RedisLsh
from distill.dedupe.shared_index import pack_text
from distill.minhash import band_keys, candidate_pairs, estimate_jaccard, example_text, signatures
from distill.progress import progress
from distill.runs import parse_jsonl_line

Line = tuple[str, int, str, bool]  # (path, line number, line, is a seed)


@dataclass
class Hashed:
    """One chunk of input lines, hashed: per line its id, text digest (None: not a chat
    example, see `problems`) and signature row; band keys and low bytes per row."""

    ids: list[str]
    digests: list[bytes | None]
    seeds: list[bool]
    problems: dict[int, str]
    rows: list[int]
    keys: np.ndarray
    low: np.ndarray
    sigs: np.ndarray | None
    texts: list[bytes] | None  # compressed normalised texts per row, to put in a shared index
    read: int  # bytes of the input read up to the chunk's end


def hash_chunk(task: tuple[list[Line], tuple[int, ...], int]) -> Hashed:
    """Parse, normalise and MinHash a chunk of lines (runs in a worker process when asked)."""
    chunk, (num_perm, seed, ngram, bands, rows, full, packed), read = task
    ids: list[str] = []
    digests: list[bytes | None] = []
    problems: dict[int, str] = {}
    texts: list[str] = []
    row_of: list[int] = []
    for k, (path, lineno, line, _) in enumerate(chunk):
        obj = parse_jsonl_line(Path(path), lineno, line)
        if not is_chat(obj):
            rid = obj.get("id") if isinstance(obj, dict) else None
            ids.append(rid if isinstance(rid, str) and rid else f"line-{lineno}")
            digests.append(None)
            problems[k] = f"not a chat example ({path}:{lineno}: no messages list)"
            row_of.append(-1)
            continue
        ids.append(record_id(obj))
        text = example_text(obj["messages"])
        digests.append(hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest())
        row_of.append(len(texts))
        texts.append(text)
    sigs = signatures(texts, num_perm, seed, ngram)
    return Hashed(
        ids=ids,
        digests=digests,
        seeds=[c[3] for c in chunk],
        problems=problems,
        rows=row_of,
        keys=band_keys(sigs, bands, rows),
        low=np.ascontiguousarray((sigs & np.uint32(0xFF)).astype(np.uint8).T),
        sigs=sigs if full else None,
        texts=[pack_text(t) for t in texts] if packed else None,
        read=read,
    )


def index(job: Job) -> np.ndarray:
    """Hash every example; exact duplicates are settled here; returns LSH candidate pairs
    (as ordinals) whose MinHash estimate is near the threshold or above."""
    first: dict[bytes, int] = {}
    key_blocks: list[np.ndarray] = []
    ord_blocks: list[np.ndarray] = []
    low_blocks: list[np.ndarray] = []  # the low byte of each MinHash value (b-bit MinHash)
    cfg = job.cfg
    result = job.result
    size = job.input_bytes
    redis_lsh = RedisLsh(cfg.lsh_storage, job.params, cfg.seed) if cfg.lsh_storage else None
    redis_pairs: list[tuple[int, int]] = []
    knobs = (
        cfg.num_perm,
        cfg.seed,
        cfg.ngram,
        job.params.bands,
        job.params.rows,
        redis_lsh is not None,
        job.shared is not None and not cfg.against,
    )
    tasks = ((chunk, knobs, read) for chunk, read in _chunks(job))
    workers = _workers(job, size)
    pool = None
    try:
        with progress("dedupe: hashing", size, unit="bytes") as meter:
            if workers > 1:
                import multiprocessing

                pool = multiprocessing.get_context("fork").Pool(workers)
                hashed: Iterator[Hashed] = pool.imap(hash_chunk, tasks)
            else:
                hashed = map(hash_chunk, tasks)
            ordinal = 0
            for h in hashed:
                meter.update(h.read)
                keep: list[int] = []  # rows of the chunk's signatures that are first copies
                picked: list[int] = []  # their positions in the chunk
                ords: list[int] = []
                for k, (rid, digest, is_seed) in enumerate(
                    zip(h.ids, h.digests, h.seeds, strict=True)
                ):
                    job.ids.append(rid)
                    job.is_seed.append(is_seed)
                    if digest is None:
                        job.removed[ordinal] = h.problems[k]
                        result.invalid += 1
                    elif (prior := first.get(digest)) is not None:
                        job.exact_of[ordinal] = prior
                        result.exact_pairs.append((job.ids[prior], rid))
                        kind = "seed " if job.is_seed[prior] else ""
                        job.removed[ordinal] = f"exact duplicate of {kind}{job.ids[prior]}"
                        result.exact += 1
                    else:
                        first[digest] = ordinal
                        keep.append(h.rows[k])
                        picked.append(k)
                        ords.append(ordinal)
                    ordinal += 1
                if not ords:
                    continue
                ord_blocks.append(np.array(ords, dtype=np.int64))
                low_blocks.append(h.low[keep])
                if redis_lsh is not None and h.sigs is not None:
                    redis_pairs.extend(redis_lsh.add_batch(ords, h.sigs[:, keep]))
                else:
                    key_blocks.append(h.keys[keep])
                if job.shared is not None and h.texts is not None:
                    job.shared.add(
                        ords,
                        [job.ids[o] for o in ords],
                        [bool(job.is_seed[o]) for o in ords],
                        [h.digests[k] or b"" for k in picked],
                        h.low[keep],
                        h.keys[keep],
                        [h.texts[r] for r in keep],
                    )
    finally:
        if pool is not None:
            pool.terminate()
        if redis_lsh is not None:
            redis_lsh.close()
    result.seeds = sum(job.is_seed)
    result.input = len(job.ids) - result.seeds
    if not ord_blocks:
        return np.empty((0, 2), dtype=np.int64)
    ords_all = np.concatenate(ord_blocks)
    low = np.concatenate(low_blocks)
    low_blocks.clear()
    floor = job.estimate_floor

    def close(rows: np.ndarray) -> np.ndarray:
        return estimate_jaccard(low, rows) >= floor

    if redis_lsh is not None:
        rows = np.searchsorted(ords_all, np.array(sorted(set(redis_pairs)), dtype=np.int64))
        rows = rows.reshape(-1, 2)
        result.candidate_pairs = len(rows)
        rows = rows[close(rows)]
    else:
        keys = np.concatenate(key_blocks)
        key_blocks.clear()
        if job.shared is not None:
            job.local = (ords_all, keys, low)  # looked up in the index after this pass
        seen = [0]
        rows = candidate_pairs(keys, close, seen)
        del keys
        result.candidate_pairs = seen[0]
    return ords_all[rows]


def _workers(job: Job, size: int) -> int:
    """Processes for hashing: --workers, else every core for inputs over 32 MB."""
    if job.cfg.workers:
        return job.cfg.workers
    return min(os.cpu_count() or 1, 8) if size > 32 << 20 else 1


def _chunks(job: Job) -> Iterator[tuple[list[Line], int]]:
    """Lines in chunks of --batch-size, each with the bytes read up to its end."""
    chunk: list[Line] = []
    read = 0
    for _, src, lineno, line, read in job.lines():
        chunk.append((str(src.path), lineno, line, src.is_seed))
        if len(chunk) >= job.cfg.batch_size:
            yield chunk, read
            chunk = []
    if chunk:
        yield chunk, read
