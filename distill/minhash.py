"""MinHash over character shingles: what dedupe and split use to find similar examples.

A text is normalised (NFKC, case-folded, whitespace collapsed) and cut into character
n-grams. Signatures are datasketch's "affine32" MinHash (same permutations, same pre-mix),
computed for many texts at once with numpy instead of one `update()` per shingle:
`signatures()` equals `datasketch.MinHash(hashfunc=shingle_hash32)` over the same shingles.
LSH bands those signatures exactly like `datasketch.MinHashLSH(params=(b, r))`; candidate
pairs are then estimated from the low byte of each value (b-bit MinHash), confirmed with the
exact Jaccard of their shingle sets, and joined into clusters by union-find.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from distill.errors import UsageError
from distill.progress import is_big, progress

NGRAM = 5
DEFAULT_NUM_PERM = 128
DEFAULT_SEED = 1
_CHUNK_SHINGLES = 8192  # shingles per numpy block: 128 x 8192 x 4 bytes stays in cache

# -- text --------------------------------------------------------------------------------------
_M64 = (1 << 64) - 1
_BASE = 0x9E3779B97F4A7C15  # odd 64-bit multiplier for the polynomial shingle hash


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace runs collapsed to one space: what 'the same text' means."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def example_text(messages: Any) -> str:
    """The normalised user and assistant turns, one per line (system prompt left out)."""
    parts = []
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, dict) and m.get("role") in ("user", "assistant"):
                content = m.get("content")
                if isinstance(content, str) and content:
                    parts.append(normalise(content))
    return "\n".join(parts)


def shingles(text: str, ngram: int = NGRAM) -> list[str]:
    """Character n-grams of a normalised text; a text shorter than n is padded to one shingle."""
    if not text:
        return []
    if len(text) < ngram:
        return [text + "\x00" * (ngram - len(text))]
    return [text[i : i + ngram] for i in range(len(text) - ngram + 1)]


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M64
    return h ^ (h >> 33)


def shingle_hash64(shingle: str) -> int:
    """The 64-bit hash of one shingle (a polynomial over code points): exact-Jaccard sets use it."""
    h = 0
    for ch in shingle:
        h = (h * _BASE + ord(ch)) & _M64
    return h


def shingle_hash32(shingle: str) -> int:
    """The 32-bit value MinHash permutes; pass it as datasketch's `hashfunc` to get our signatures."""
    return _fmix64_int(shingle_hash64(shingle)) >> 32


def _shingle_hashes(texts: list[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit shingle hashes of every text, concatenated, and each text's [start, end) offsets."""
    pad = "\x00" * (ngram - 1)
    cps = np.frombuffer(("".join(t + pad for t in texts)).encode("utf-32-le"), dtype=np.uint32)
    cps = cps.astype(np.uint64)
    total = len(cps) - ngram + 1
    h = np.zeros(max(total, 0), dtype=np.uint64)
    if total > 0:
        for k in range(ngram):
            h *= np.uint64(_BASE)
            h += cps[k : k + total]
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    starts = np.zeros(len(texts), dtype=np.int64)
    if len(texts) > 1:
        starts[1:] = np.cumsum(lens + ngram - 1)[:-1]
    counts = np.where(lens >= ngram, lens - ngram + 1, np.minimum(lens, 1))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    idx = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1], dtype=np.int64)
    return h[idx], offsets


def shingle_sets(texts: list[str], ngram: int = NGRAM) -> list[np.ndarray]:
    """Each text's set of 64-bit shingle hashes, sorted and unique (for exact Jaccard)."""
    h, offsets = _shingle_hashes(texts, ngram)
    out = []
    with progress("shingle sets", len(texts)) as meter:
        for i in meter.each(range(len(texts))):
            x = np.sort(h[offsets[i] : offsets[i + 1]])
            if len(x) > 1:
                x = x[np.concatenate(([True], x[1:] != x[:-1]))]
            out.append(x)
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted unique hash arrays (1.0 for two empty sets)."""
    if len(a) == 0 or len(b) == 0:
        return 1.0 if len(a) == len(b) else 0.0
    if len(a) > len(b):
        a, b = b, a
    idx = np.searchsorted(b, a)
    idx[idx == len(b)] = 0
    inter = int(np.count_nonzero(b[idx] == a))
    return inter / (len(a) + len(b) - inter)


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a, b) for this num_perm and seed."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed).permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def signatures(
    texts: list[str], num_perm: int = DEFAULT_NUM_PERM, seed: int = DEFAULT_SEED, ngram: int = NGRAM
) -> np.ndarray:
    """MinHash signatures, shape (num_perm, len(texts)) uint32, of the texts' shingle sets.

    Column i equals `datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash32)` updated with
    `shingles(texts[i])`; an empty text gets the all-max signature of an empty MinHash."""
    a, b = permutations(num_perm, seed)
    a, b = a[:, None], b[:, None]
    out = np.full((num_perm, len(texts)), np.iinfo(np.uint32).max, dtype=np.uint32)
    if not texts:
        return out
    h, offsets = _shingle_hashes(texts, ngram)
    hv = _fmix32((_fmix64(h) >> np.uint64(32)).astype(np.uint32))
    counts = np.diff(offsets)
    buf = np.empty((num_perm, _CHUNK_SHINGLES), dtype=np.uint32)
    i, n = 0, len(texts)
    with progress("MinHash signatures", n) as meter:
        while i < n:
            meter.update(i)
            # whole documents with about _CHUNK_SHINGLES shingles (at least one document)
            j = int(np.searchsorted(offsets, offsets[i] + _CHUNK_SHINGLES, side="right")) - 1
            j = min(max(j, i + 1), n)
            lo, hi = int(offsets[i]), int(offsets[j])
            if hi > lo:
                width = hi - lo
                block = (
                    buf[:, :width]
                    if width <= _CHUNK_SHINGLES
                    else np.empty((num_perm, width), np.uint32)
                )
                np.multiply(a, hv[None, lo:hi], out=block)
                block += b
                docs = np.nonzero(counts[i:j])[0]
                mins = np.minimum.reduceat(block, offsets[i:j][docs] - lo, axis=1)
                out[:, i + docs] = mins
            i = j
    return out


# -- LSH ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LshParams:
    """Bands x rows of the LSH and its expected error, as datasketch computes them."""

    threshold: float
    num_perm: int
    bands: int
    rows: int
    false_positive: float  # area under the S-curve below the threshold
    false_negative: float  # area above the S-curve over the threshold

    def candidate_probability(self, s: float) -> float:
        """Chance that two sets with Jaccard s share at least one band."""
        return 1.0 - (1.0 - s**self.rows) ** self.bands

    def describe(self) -> dict[str, Any]:
        t = self.threshold
        return {
            "bands": self.bands,
            "rows": self.rows,
            "false_positive_area": round(self.false_positive, 6),
            "false_negative_area": round(self.false_negative, 6),
            # the areas divided by their interval: the mean chance for a pair whose Jaccard is
            # uniform below / above the threshold
            "expected_false_positive_rate": round(self.false_positive / t, 6) if t > 0 else 0.0,
            "expected_false_negative_rate": round(self.false_negative / (1 - t), 6)
            if t < 1
            else 0.0,
            "candidate_probability": {
                f"{s:.2f}": round(self.candidate_probability(s), 4)
                for s in sorted({0.3, 0.5, 0.7, t, 0.9, 0.95})
            },
        }


@lru_cache(maxsize=32)
def lsh_params(
    threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)
) -> LshParams:
    """Bands and rows from datasketch's optimiser, with its integrated FP/FN areas."""
    from datasketch.lsh import (
        _false_negative_probability,
        _false_positive_probability,
        _optimal_param,
    )

    if not 0.0 < threshold < 1.0:
        raise UsageError(f"--threshold {threshold}: must be between 0 and 1 (exclusive)")
    if num_perm < 2:
        raise UsageError(f"--num-perm {num_perm}: must be at least 2")
    bands, rows = _optimal_param(threshold, num_perm, *weights)
    if bands < 2:
        raise UsageError(
            f"--threshold {threshold} with --num-perm {num_perm} gives fewer than 2 LSH bands; "
            "raise --num-perm"
        )
    fp = _false_positive_probability(threshold, bands, rows)
    fn = _false_negative_probability(threshold, bands, rows)
    return LshParams(threshold, num_perm, bands, rows, fp, fn)


def recall_params(threshold: float, num_perm: int, miss: float = 1e-4) -> LshParams:
    """The fewest-candidate bands x rows that miss a pair at `threshold` with chance <= miss
    (for checks that must not miss, like split's leakage check)."""
    from datasketch.lsh import _false_negative_probability, _false_positive_probability

    best: tuple[int, int] | None = None
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if bands >= 2 and (1 - threshold**rows) ** bands <= miss:
            best = (bands, rows)
            break
    bands, rows = best or (num_perm, 1)
    return LshParams(
        threshold,
        num_perm,
        bands,
        rows,
        _false_positive_probability(threshold, bands, rows),
        _false_negative_probability(threshold, bands, rows),
    )


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per band and document, shape (n, bands): equal keys = a shared bucket."""
    n = sigs.shape[1]
    keys = np.empty((n, bands), dtype=np.uint64)
    mult = np.uint64(0x100000001B3)
    for band in range(bands):
        h = np.full(n, np.uint64(0xCBF29CE484222325) ^ np.uint64(band), dtype=np.uint64)
        for row in sigs[band * rows : (band + 1) * rows]:
            h = (h ^ row.astype(np.uint64)) * mult
        keys[:, band] = _fmix64(h)
    return keys


def candidate_pairs(
    keys: np.ndarray,
    accept: Callable[[np.ndarray], np.ndarray] | None = None,
    counter: list[int] | None = None,
) -> np.ndarray:
    """Index pairs (i < j) that share a key in at least one band column; shape (m, 2) int64.

    `accept(pairs) -> bool mask` filters each band's pairs as they are made, so memory holds
    only the accepted ones; `counter[0]` is increased by the pairs seen before filtering."""
    n = keys.shape[0]
    found: list[np.ndarray] = []
    with progress("LSH bands", keys.shape[1], big=is_big(n)) as meter:
        for band in meter.each(range(keys.shape[1])):
            col = keys[:, band]
            order = np.argsort(col, kind="stable")
            s = col[order]
            same = s[1:] == s[:-1]
            if not same.any():
                continue
            # every position in a run of equal keys pairs with each later position of its run
            run_id = np.concatenate(([0], np.cumsum(~same)))
            run_end = np.searchsorted(run_id, run_id, side="right")  # one past each run's last
            later = run_end - np.arange(n) - 1
            has = np.nonzero(later)[0]
            counts = later[has]
            left = np.repeat(has, counts)
            starts = np.cumsum(counts) - counts
            right = left + 1 + np.arange(len(left)) - np.repeat(starts, counts)
            a, b = order[left], order[right]
            pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
            if counter is not None:
                counter[0] += len(pairs)
            found.append(pairs[accept(pairs)] if accept is not None else pairs)
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    code = np.sort(pairs[:, 0] * np.int64(n) + pairs[:, 1])
    if len(code) > 1:
        code = code[np.concatenate(([True], code[1:] != code[:-1]))]
    return np.stack([code // n, code % n], axis=1)


def estimate_jaccard(low: np.ndarray, pairs: np.ndarray, bits: int = 8) -> np.ndarray:
    """b-bit MinHash estimate of each pair's Jaccard from the low `bits` of the signatures
    (`low`: shape (n, num_perm) uint8), corrected for chance matches of the low bits."""
    out = np.empty(len(pairs), dtype=np.float64)
    chance = 1.0 / (1 << bits)
    step = 4096
    for lo in range(0, len(pairs), step):
        block = pairs[lo : lo + step]
        same = np.count_nonzero(low[block[:, 0]] == low[block[:, 1]], axis=1)
        out[lo : lo + step] = (same / low.shape[1] - chance) / (1 - chance)
    return out


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving; `find` gives a set's smallest member."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return x

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            if ry < rx:
                rx, ry = ry, rx
            self.parent[ry] = rx  # the smaller index stays the root

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for x in range(len(self.parent)):
            out.setdefault(self.find(x), []).append(x)
        return out
