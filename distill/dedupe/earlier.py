"""With --index, after the input's own passes: look every example still kept up among the
earlier shards' examples (same LSH buckets, same 8-bit estimate floor, same exact Jaccard as
inside one input) and remove it if one of them is its duplicate. That is what one process
would remove with the earlier shards' inputs in front of this one."""

from __future__ import annotations

import numpy as np

from distill.dedupe.job import Job
from distill.dedupe.shared_index import Earlier, SharedIndex
from distill.minhash import estimate_jaccard, example_text, jaccard, shingle_sets
from distill.progress import progress
from distill.runs import parse_jsonl_line

BLOCK = 4096  # examples looked up together


def check(job: Job) -> None:
    """Remove the examples that duplicate an example of an earlier shard, naming it."""
    shared = job.shared
    assert shared is not None
    if job.local is None or not shared.visible:
        return
    ords, keys, low = job.local
    rows = [i for i, o in enumerate(ords.tolist()) if o not in job.removed]
    wanted: dict[int, list[int]] = {}  # ordinal -> order keys of candidates over the floor
    with progress("dedupe: looking up the index", len(rows)) as meter:
        for lo in range(0, len(rows), BLOCK):
            meter.update(lo)
            block = np.array(rows[lo : lo + BLOCK], dtype=np.int64)
            found = shared.candidates(keys[block])
            need = sorted({c for cs in found for c in cs})
            if not need:
                continue
            theirs = shared.signatures(need, job.cfg.num_perm)
            at = {c: len(block) + k for k, c in enumerate(need)}
            both = np.vstack([low[block], np.stack([theirs[c][1] for c in need])])
            pairs = np.array(
                [(k, at[c]) for k, cs in enumerate(found) for c in cs], dtype=np.int64
            ).reshape(-1, 2)
            close = estimate_jaccard(both, pairs) >= job.estimate_floor
            for (k, i), ok in zip(pairs.tolist(), close.tolist(), strict=True):
                if ok:
                    wanted.setdefault(int(ords[block[k]]), []).append(need[i - len(block)])
    if wanted:
        _confirm(job, shared, wanted)


def _confirm(job: Job, shared: SharedIndex, wanted: dict[int, list[int]]) -> None:
    """Read this input again, parsing only the lines with candidates, and compare exactly."""
    todo: list[tuple[int, str]] = []

    def flush() -> None:
        need = sorted({c for o, _ in todo for c in wanted[o]})
        earlier = shared.examples(need)
        texts = [t for _, t in todo] + [earlier[c].text for c in need]
        sets = shingle_sets(texts, job.cfg.ngram)
        at = {c: len(todo) + k for k, c in enumerate(need)}
        for k, (o, text) in enumerate(todo):
            exact = [earlier[c] for c in wanted[o] if earlier[c].text == text]
            if exact:
                _remove(job, shared, o, min(exact, key=lambda e: e.order), None)
                continue
            if job.is_seed[o]:
                continue  # only an exact copy removes a seed
            # the most similar; on a tie the earliest
            j, neg = max((jaccard(sets[k], sets[at[c]]), -c) for c in wanted[o])
            if j >= job.cfg.threshold:
                _remove(job, shared, o, earlier[-neg], j)
        todo.clear()

    with progress("dedupe: comparing with the index", job.input_bytes, unit="bytes") as meter:
        for ordinal, src, lineno, line, read in job.lines():
            meter.update(read)
            if ordinal in wanted:
                obj = parse_jsonl_line(src.path, lineno, line)
                todo.append((ordinal, example_text(obj["messages"])))
                if len(todo) >= job.cfg.batch_size:
                    flush()
        if todo:
            flush()


def _remove(job: Job, shared: SharedIndex, o: int, match: Earlier, j: float | None) -> None:
    seed = "seed " if match.is_seed else ""
    where = f"in index {shared.name}, {shared.source(match.position)}"
    if j is None:
        job.removed[o] = f"exact duplicate of {seed}{match.id} {where}"
    elif match.is_seed:
        job.removed[o] = f"near-copy of seed {match.id} (jaccard {j:.2f}) {where}"
    else:
        job.removed[o] = f"near-duplicate of {match.id} (jaccard {j:.2f}) {where}"
    job.result.indexed += 1
