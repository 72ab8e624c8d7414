"""Pass 2: compare each LSH candidate pair exactly (Jaccard of the shingle sets), join the
confirmed pairs into clusters by union-find, and decide which example each cluster keeps:
every seed in it, else the first in input order."""

from __future__ import annotations

import numpy as np

from distill.dedupe.job import Job, snippet
from distill.minhash import UnionFind, example_text, jaccard, shingle_sets
from distill.progress import progress
from distill.runs import parse_jsonl_line


def confirm(job: Job, pairs: np.ndarray) -> None:
    """Exact Jaccard for each candidate pair; union-find over the confirmed ones; decide
    which example each cluster keeps.

    Reads the input again in order and parses only the examples in some pair; a pair is
    compared when its later member is read, and a shingle set is dropped once its last
    pair is done, so memory holds only the sets still waiting for a partner."""
    job.result.estimated_pairs = len(pairs)
    if len(pairs) == 0:
        return
    pairs = pairs[np.argsort(pairs[:, 1], kind="stable")]
    later = pairs[:, 1]
    wanted = set(np.unique(pairs).tolist())
    firsts, counts = np.unique(pairs[:, 0], return_counts=True)
    waiting = dict(zip(firsts.tolist(), counts.tolist(), strict=True))
    sets: dict[int, np.ndarray] = {}
    snippets: dict[int, str] = {}
    todo_ords: list[int] = []
    todo_texts: list[str] = []
    t = job.cfg.threshold
    uf = UnionFind(0)
    local: dict[int, int] = {}
    members_of: list[int] = []
    edges: dict[int, list[tuple[float, int]]] = {}

    def flush() -> None:
        for o, s in zip(todo_ords, shingle_sets(todo_texts, job.cfg.ngram), strict=True):
            sets[o] = s
        for o in todo_ords:
            lo, hi = np.searchsorted(later, [o, o + 1])
            for a in pairs[lo:hi, 0].tolist():
                j = jaccard(sets[a], sets[o])
                waiting[a] -= 1
                if not waiting[a]:
                    del sets[a]
                if j >= t:
                    link(a, o, j)
            if not waiting.get(o):
                del sets[o]
        todo_ords.clear()
        todo_texts.clear()

    def link(a: int, b: int, j: float) -> None:
        job.result.confirmed_pairs += 1
        job.result.confirmed.append((job.ids[a], job.ids[b], j))
        for o in (a, b):
            if o not in local:
                local[o] = len(members_of)
                members_of.append(o)
                uf.parent.append(local[o])
        uf.union(local[a], local[b])
        edges.setdefault(a, []).append((j, b))
        edges.setdefault(b, []).append((j, a))

    size = job.input_bytes
    with progress("dedupe: comparing", size, unit="bytes") as meter:
        for ordinal, src, lineno, line, read in job.lines():
            meter.update(read)
            if ordinal in wanted:
                obj = parse_jsonl_line(src.path, lineno, line)
                todo_ords.append(ordinal)
                todo_texts.append(example_text(obj["messages"]))
                snippets[ordinal] = snippet(obj["messages"])
                if len(todo_ords) >= job.cfg.batch_size:
                    flush()
        flush()

    settle = _settle_earliest if job.shared is not None else _settle
    for group in uf.groups().values():
        ords = sorted(members_of[g] for g in group)
        settle(job, ords, edges, snippets)


def _settle(
    job: Job,
    ords: list[int],
    edges: dict[int, list[tuple[float, int]]],
    snippets: dict[int, str],
) -> None:
    """Keep every seed of the cluster, else its first example; the others are removed
    with the Jaccard to a kept one, or to the neighbour that joined them to the cluster."""
    seeds = [o for o in ords if job.is_seed[o]]
    keep = seeds or [ords[0]]  # rule: every seed, else the first in input order
    kept = set(keep)
    removed, scores = [], []
    for o in ords:
        if o in kept:
            continue
        direct = [(j, k) for j, k in edges[o] if k in kept]
        if direct:
            j, k = max(direct)
            what = f"near-copy of seed {job.ids[k]}" if seeds else f"near-duplicate of {job.ids[k]}"
            job.removed[o] = f"{what} (jaccard {j:.2f})"
        else:
            j, k = max(edges[o])
            where = (
                f"a cluster with seed {job.ids[keep[0]]}"
                if seeds
                else f"the cluster kept as {job.ids[keep[0]]}"
            )
            job.removed[o] = f"near-duplicate of {job.ids[k]} (jaccard {j:.2f}), in {where}"
        if seeds:
            job.result.seed_copies += 1
        else:
            job.result.near += 1
        removed.append(o)
        scores.append(round(j, 4))
    cluster = {
        "kind": "near",
        "kept": job.ids[keep[0]],
        "also_kept": [job.ids[k] for k in keep[1:]],
        "removed": [job.ids[o] for o in removed],
        "jaccard": scores,  # each removed one's Jaccard to the example its reason names
        "size": len(ords),
        "has_seed": bool(seeds),
        "_texts": [snippets.get(o, "") for o in [keep[0], *removed[:3]]],
    }
    job.clusters.append(cluster)


def _settle_earliest(
    job: Job,
    ords: list[int],
    edges: dict[int, list[tuple[float, int]]],
    snippets: dict[int, str],
) -> None:
    """With a shared index: an example is removed iff an earlier one (kept or removed) is a
    confirmed near-duplicate of it; a seed stays (only an exact copy removes it). Unlike the
    cluster rule this depends on nothing but which examples come earlier, so shards on other
    machines decide it the same way (distill.dedupe.earlier)."""
    kept: list[int] = []
    removed, scores = [], []
    for o in ords:
        earlier = [(j, k) for j, k in edges[o] if k < o]
        if job.is_seed[o] or not earlier:
            kept.append(o)
            continue
        j, k = max(earlier)
        if job.is_seed[k]:
            job.removed[o] = f"near-copy of seed {job.ids[k]} (jaccard {j:.2f})"
            job.result.seed_copies += 1
        else:
            job.removed[o] = f"near-duplicate of {job.ids[k]} (jaccard {j:.2f})"
            job.result.near += 1
        removed.append(o)
        scores.append(round(j, 4))
    job.clusters.append(
        {
            "kind": "near",
            "kept": job.ids[kept[0]],  # the first example is always kept
            "also_kept": [job.ids[k] for k in kept[1:]],
            "removed": [job.ids[o] for o in removed],
            "jaccard": scores,  # each removed one's Jaccard to the earlier example its reason names
            "size": len(ords),
            "has_seed": any(job.is_seed[o] for o in ords),
            "_texts": [snippets.get(o, "") for o in [kept[0], *removed[:3]]],
        }
    )
