"""Exact duplicate lines in bounded memory, for `distill validate`."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distill.validation.problems import Collector

DEDUPE_CHUNK = 1 << 20  # (hash, line) pairs held in memory before they spill to bucket files
DEDUPE_BUCKETS = 64


class Duplicates:
    """Exact-duplicate detection in bounded memory: a 64-bit hash and the line number of every
    valid example; past DEDUPE_CHUNK pairs they are hash-partitioned into temporary bucket files,
    and each bucket is checked on its own at the end."""

    def __init__(self) -> None:
        self.hashes = array("q")
        self.lines = array("q")
        self.tmp: Any = None

    def spill(self) -> None:
        import tempfile

        import numpy as np

        if self.tmp is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="distill-validate-")
        pairs = np.empty(len(self.hashes), dtype=[("h", "<i8"), ("l", "<i8")])
        pairs["h"] = np.frombuffer(self.hashes, dtype=np.int64)
        pairs["l"] = np.frombuffer(self.lines, dtype=np.int64)
        bucket = pairs["h"] & (DEDUPE_BUCKETS - 1)
        order = np.argsort(bucket, kind="stable")  # stable: each bucket stays in line order
        pairs, bucket = pairs[order], bucket[order]
        bounds = np.searchsorted(bucket, np.arange(DEDUPE_BUCKETS + 1))
        for b in range(DEDUPE_BUCKETS):
            if bounds[b + 1] > bounds[b]:
                with open(Path(self.tmp.name) / f"{b}.bin", "ab") as f:
                    pairs[bounds[b] : bounds[b + 1]].tofile(f)
        self.hashes = array("q")
        self.lines = array("q")

    def report(self, collector: Collector) -> int:
        """Flag every line whose content was seen on an earlier line; returns how many."""
        import numpy as np

        total = 0
        kept_dup: list[Any] = []
        kept_orig: list[Any] = []
        for h, ln in self._buckets():
            dup, orig = _duplicate_pairs(h, ln)
            total += len(dup)
            keep = np.argsort(dup, kind="stable")[: collector.cap]  # only the lowest are shown
            kept_dup.append(dup[keep])
            kept_orig.append(orig[keep])
        if not total:
            return 0
        dup, orig = np.concatenate(kept_dup), np.concatenate(kept_orig)
        by_line = np.argsort(dup, kind="stable")[: collector.cap]
        for d, o in zip(dup[by_line].tolist(), orig[by_line].tolist(), strict=True):
            collector.add(d, "duplicate", f"exact duplicate of line {o}")
        collector.counts["duplicate"] += total - len(by_line)
        return total

    def _buckets(self) -> Iterable[tuple[Any, Any]]:
        import numpy as np

        if self.tmp is None:
            yield (
                np.frombuffer(self.hashes, dtype=np.int64),
                np.frombuffer(self.lines, dtype=np.int64),
            )
            return
        self.spill()
        for b in range(DEDUPE_BUCKETS):
            path = Path(self.tmp.name) / f"{b}.bin"
            if path.exists():
                pairs = np.fromfile(path, dtype=[("h", "<i8"), ("l", "<i8")])
                yield pairs["h"].copy(), pairs["l"].copy()
                del pairs

    def close(self) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None


def _duplicate_pairs(h: Any, ln: Any) -> tuple[Any, Any]:
    """(duplicate lines, line each duplicates) for hashes `h` of lines `ln` (in line order)."""
    import numpy as np

    if len(h) < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    order = np.argsort(h, kind="stable")  # stable: equal hashes stay in line order
    hs = h[order]
    run_start = np.empty(len(hs), dtype=bool)
    run_start[0] = True
    np.not_equal(hs[1:], hs[:-1], out=run_start[1:])
    del hs
    dup_pos = np.nonzero(~run_start)[0]
    if not len(dup_pos):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    # for each position, the index (in sorted order) of the first element of its run
    first_idx = np.maximum.accumulate(np.where(run_start, np.arange(len(run_start)), 0))
    return ln[order[dup_pos]], ln[order[first_idx[dup_pos]]]
