"""Remove exact and near-duplicate examples: repeats teach a student to parrot.

Exact duplicates are found by a hash of the normalised text; near-duplicates by MinHash LSH
over character n-gram shingles of the normalised user and assistant turns (the system prompt,
the same everywhere, is left out). LSH candidate pairs whose 8-bit (b-bit) MinHash estimate
is within 4.5 standard deviations of the threshold or above are confirmed with the exact
Jaccard similarity of their shingle sets, joined into clusters by union-find, and each cluster
keeps its seeds if it has any, else the example that comes first in the input.

Three streaming passes over the input: hash and index (exact duplicates settled here), confirm
candidates (only their lines are parsed again), write. Memory holds ~250 bytes per example
plus the shingle sets of candidates still waiting for their partner.

The MinHash signatures are datasketch's "affine32" MinHash (same permutations, same
pre-mix), computed for a whole batch of documents with numpy instead of one `update()` per
shingle; `signatures()` equals `datasketch.MinHash(hashfunc=shingle_hash32)` over the same
shingles. The in-memory LSH bands those signatures with numpy exactly like
`datasketch.MinHashLSH(params=(b, r))`; `--lsh-storage redis://HOST:PORT` uses
`datasketch.MinHashLSH` itself with its Redis storage.

`split` imports the text, signature, LSH and union-find helpers from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import numpy as np

from distill.errors import DistillError, InputError, UsageError
from distill.records import content_id
from distill.runs import Run, atomic_file, atomic_write_json, atomic_write_jsonl

STAGE = "dedupe"
NGRAM = 5
DEFAULT_THRESHOLD = 0.8
DEFAULT_NUM_PERM = 128
DEFAULT_SEED = 1
BATCH = 4096  # documents hashed together
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
    for i in range(len(texts)):
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
    while i < n:
        # a block of whole documents with about _CHUNK_SHINGLES shingles (at least one document)
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
    for band in range(keys.shape[1]):
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


class RedisLsh:
    """datasketch.MinHashLSH with Redis storage: the index lives in Redis, not in this process."""

    def __init__(self, url: str, params: LshParams, seed: int) -> None:
        from datasketch import MinHashLSH

        self.url = url
        host, port, db = parse_redis_url(url)
        # a password comes from the URL or, better, the REDIS_PASSWORD environment variable
        password = urlparse(url).password or os.environ.get("REDIS_PASSWORD") or None
        self.basename = f"distill-{os.getpid()}-{secrets.token_hex(4)}".encode()
        self.config = {
            "type": "redis",
            "basename": self.basename,
            "redis": {"host": host, "port": port, "db": db, "password": password},
        }
        self.perms = permutations(params.num_perm, seed)
        self.seed = seed
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self.client = redis.Redis(
                host=host,
                port=port,
                db=db,
                password=password,
                socket_connect_timeout=5,
                retry=Retry(NoBackoff(), 0),
            )
            self.client.ping()
            self.lsh = MinHashLSH(
                num_perm=params.num_perm,
                params=(params.bands, params.rows),
                storage_config=self.config,
            )
        except ImportError:
            raise UsageError(
                "--lsh-storage redis:// needs the redis package: pip install 'distill[redis]'"
            ) from None
        except Exception as e:  # redis.ConnectionError and friends
            raise UsageError(
                f"--lsh-storage {_redact(url)}: cannot use Redis ({type(e).__name__}: {e}); "
                "start redis-server there (password: REDIS_PASSWORD) or drop --lsh-storage"
            ) from None

    def add_batch(self, ordinals: list[int], sigs: np.ndarray) -> list[tuple[int, int]]:
        """Insert a batch of documents and return (earlier, later) candidate pairs."""
        from datasketch import MinHash

        minhashes = [
            MinHash(
                num_perm=sigs.shape[0],
                seed=self.seed,
                hashvalues=sigs[:, k],
                permutations=np.array(self.perms),
                scheme="affine32",
            )
            for k in range(len(ordinals))
        ]
        with self.lsh.insertion_session() as session:
            for key, mh in zip(ordinals, minhashes, strict=True):
                session.insert(key, mh, check_duplication=False)
        pairs = []
        for key, mh in zip(ordinals, minhashes, strict=True):
            for other in self.lsh.query(mh):
                if other < key:
                    pairs.append((int(other), key))
        return pairs

    def close(self) -> None:
        """Delete this run's keys from Redis."""
        try:
            keys = list(self.client.scan_iter(match=self.basename + b"*", count=1000))
            for i in range(0, len(keys), 1000):
                self.client.delete(*keys[i : i + 1000])
        except Exception:  # cleaning up is best effort; the keys carry a unique prefix
            pass


def parse_redis_url(url: str) -> tuple[str, int, int]:
    u = urlparse(url)
    if u.scheme != "redis" or not u.hostname:
        raise UsageError(f"--lsh-storage {_redact(url)}: expected redis://HOST:PORT[/DB]")
    try:
        port = u.port or 6379
        db = int(u.path.strip("/") or 0)
    except ValueError:
        raise UsageError(f"--lsh-storage {_redact(url)}: expected redis://HOST:PORT[/DB]") from None
    return u.hostname, port, db


# -- the stage ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DedupeConfig:
    """The knobs of `distill dedupe`; defaults explained in the README."""

    threshold: float = DEFAULT_THRESHOLD
    num_perm: int = DEFAULT_NUM_PERM
    ngram: int = NGRAM
    seed: int = DEFAULT_SEED
    include_seeds: bool = True
    lsh_storage: str | None = None  # None: in memory; "redis://HOST:PORT"
    batch_size: int = BATCH
    workers: int = 0  # hashing processes; 0: every core when the input is over 32 MB
    # (false positive, false negative) weights for datasketch's optimiser: candidates are confirmed
    # with exact Jaccard, so a false positive costs one comparison and a false negative a kept
    # duplicate; weighting misses 9:1 gives 14 bands x 9 rows at 0.8 (0.87 chance at J = 0.8)
    weights: tuple[float, float] = (0.1, 0.9)


@dataclass
class DedupeResult:
    """What happened, for the terminal table and the report."""

    input: int = 0
    seeds: int = 0
    invalid: int = 0
    exact: int = 0
    near: int = 0
    seed_copies: int = 0
    kept: int = 0
    candidate_pairs: int = 0  # pairs sharing an LSH bucket (counted once per shared band)
    estimated_pairs: int = 0  # of those, with a MinHash estimate near the threshold or above
    confirmed_pairs: int = 0
    params: LshParams | None = None
    output: Path | None = None
    rejected: Path | None = None
    report: Path | None = None
    largest: list[dict[str, Any]] = field(default_factory=list)
    confirmed: list[tuple[str, str, float]] = field(default_factory=list)  # (id, id, jaccard)
    exact_pairs: list[tuple[str, str]] = field(default_factory=list)  # (first copy, later copy)
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per pass

    @property
    def removed(self) -> int:
        return self.invalid + self.exact + self.near + self.seed_copies


@dataclass(frozen=True)
class _Source:
    path: Path
    is_seed: bool


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) for each non-blank line; a partial last line that is not valid JSON
    (a killed writer) is skipped, as `read_jsonl` does."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                if not raw.endswith(b"\n"):
                    return  # a write cut inside a multi-byte character
                raise InputError(
                    f"{path}:{lineno}: not UTF-8 text (byte {e.start}); save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            if not line.endswith("\n"):
                try:
                    json.loads(line)
                except json.JSONDecodeError:
                    return
                line += "\n"
            yield lineno, line


def _parse(path: Path, lineno: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path}:{lineno}: invalid JSON ({e.msg}); fix or remove the line"
        ) from None


def _seed_record(obj: Any) -> dict[str, Any]:
    """A seed line as a deduped.jsonl record: id, messages, meta.source = "seed"."""
    messages = obj["messages"]
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    rid = (
        obj.get("id") if isinstance(obj.get("id"), str) and obj.get("id") else content_id(messages)
    )
    return {"id": rid, "messages": messages, "meta": {**meta, "source": "seed"}}


def _record_id(obj: dict[str, Any]) -> str:
    rid = obj.get("id")
    return rid if isinstance(rid, str) and rid else content_id(obj["messages"])


def _is_chat(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("messages"), list)
        and all(isinstance(m, dict) for m in obj["messages"])
    )


@dataclass
class _Hashed:
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


def _hash_chunk(task: tuple[list[tuple[str, int, str, bool]], tuple[int, ...]]) -> _Hashed:
    """Parse, normalise and MinHash a chunk of lines (runs in a worker process when asked)."""
    chunk, (num_perm, seed, ngram, bands, rows, full) = task
    ids: list[str] = []
    digests: list[bytes | None] = []
    problems: dict[int, str] = {}
    texts: list[str] = []
    row_of: list[int] = []
    for k, (path, lineno, line, _) in enumerate(chunk):
        obj = _parse(Path(path), lineno, line)
        if not _is_chat(obj):
            rid = obj.get("id") if isinstance(obj, dict) else None
            ids.append(rid if isinstance(rid, str) and rid else f"line-{lineno}")
            digests.append(None)
            problems[k] = f"not a chat example ({path}:{lineno}: no messages list)"
            row_of.append(-1)
            continue
        ids.append(_record_id(obj))
        text = example_text(obj["messages"])
        digests.append(hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest())
        row_of.append(len(texts))
        texts.append(text)
    sigs = signatures(texts, num_perm, seed, ngram)
    return _Hashed(
        ids=ids,
        digests=digests,
        seeds=[c[3] for c in chunk],
        problems=problems,
        rows=row_of,
        keys=band_keys(sigs, bands, rows),
        low=np.ascontiguousarray((sigs & np.uint32(0xFF)).astype(np.uint8).T),
        sigs=sigs if full else None,
    )


class _Dedupe:
    """The three passes: hash and index; confirm candidates with exact Jaccard; write out."""

    def __init__(self, sources: list[_Source], config: DedupeConfig) -> None:
        self.sources = sources
        self.cfg = config
        self.params = lsh_params(config.threshold, config.num_perm, config.weights)
        self.ids: list[str] = []
        self.is_seed = bytearray()
        self.removed: dict[int, str] = {}  # ordinal -> reason
        self.exact_of: dict[int, int] = {}  # ordinal -> ordinal of its first exact copy
        self.result = DedupeResult(params=self.params)
        # candidates estimated below this are not compared exactly: 4.5 standard deviations
        # of the MinHash estimate under the threshold (a miss at J = threshold: ~1e-5)
        t = config.threshold
        self.estimate_floor = max(0.0, t - 4.5 * (t * (1 - t) / config.num_perm) ** 0.5)
        self.clusters: list[dict[str, Any]] = []

    # pass 1 -----------------------------------------------------------------------------------
    def index(self) -> np.ndarray:
        """Hash every example; exact duplicates are settled here; returns LSH candidate pairs
        (as ordinals) whose MinHash estimate is near the threshold or above."""
        first: dict[bytes, int] = {}
        key_blocks: list[np.ndarray] = []
        ord_blocks: list[np.ndarray] = []
        low_blocks: list[np.ndarray] = []  # the low byte of each MinHash value (b-bit MinHash)
        cfg = self.cfg
        redis_lsh = RedisLsh(cfg.lsh_storage, self.params, cfg.seed) if cfg.lsh_storage else None
        redis_pairs: list[tuple[int, int]] = []
        job = (
            cfg.num_perm,
            cfg.seed,
            cfg.ngram,
            self.params.bands,
            self.params.rows,
            redis_lsh is not None,
        )
        tasks = ((chunk, job) for chunk in self._chunks())
        workers = self._workers()
        pool = None
        try:
            if workers > 1:
                import multiprocessing

                pool = multiprocessing.get_context("fork").Pool(workers)
                hashed: Iterator[_Hashed] = pool.imap(_hash_chunk, tasks)
            else:
                hashed = map(_hash_chunk, tasks)
            ordinal = 0
            for h in hashed:
                keep: list[int] = []
                ords: list[int] = []
                for k, (rid, digest, is_seed) in enumerate(
                    zip(h.ids, h.digests, h.seeds, strict=True)
                ):
                    self.ids.append(rid)
                    self.is_seed.append(is_seed)
                    if digest is None:
                        self.removed[ordinal] = h.problems[k]
                        self.result.invalid += 1
                    elif (prior := first.get(digest)) is not None:
                        self.exact_of[ordinal] = prior
                        self.result.exact_pairs.append((self.ids[prior], rid))
                        kind = "seed " if self.is_seed[prior] else ""
                        self.removed[ordinal] = f"exact duplicate of {kind}{self.ids[prior]}"
                        self.result.exact += 1
                    else:
                        first[digest] = ordinal
                        keep.append(h.rows[k])
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
        finally:
            if pool is not None:
                pool.terminate()
            if redis_lsh is not None:
                redis_lsh.close()
        self.result.seeds = sum(self.is_seed)
        self.result.input = len(self.ids) - self.result.seeds
        if not ord_blocks:
            return np.empty((0, 2), dtype=np.int64)
        ords_all = np.concatenate(ord_blocks)
        low = np.concatenate(low_blocks)
        low_blocks.clear()
        floor = self.estimate_floor

        def close(rows: np.ndarray) -> np.ndarray:
            return estimate_jaccard(low, rows) >= floor

        if redis_lsh is not None:
            rows = np.searchsorted(ords_all, np.array(sorted(set(redis_pairs)), dtype=np.int64))
            rows = rows.reshape(-1, 2)
            self.result.candidate_pairs = len(rows)
            rows = rows[close(rows)]
        else:
            seen = [0]
            rows = candidate_pairs(np.concatenate(key_blocks), close, seen)
            key_blocks.clear()
            self.result.candidate_pairs = seen[0]
        return ords_all[rows]

    def _workers(self) -> int:
        """Processes for hashing: --workers, else every core for inputs over 32 MB."""
        if self.cfg.workers:
            return self.cfg.workers
        size = sum(src.path.stat().st_size for src in self.sources if src.path.exists())
        return min(os.cpu_count() or 1, 8) if size > 32 << 20 else 1

    def _chunks(self) -> Iterator[list[tuple[str, int, str, bool]]]:
        chunk: list[tuple[str, int, str, bool]] = []
        for _, src, lineno, line in self._iter_all():
            chunk.append((str(src.path), lineno, line, src.is_seed))
            if len(chunk) >= self.cfg.batch_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _iter_all(self) -> Iterator[tuple[int, _Source, int, str]]:
        ordinal = 0
        for src in self.sources:
            for lineno, line in _lines(src.path):
                yield ordinal, src, lineno, line
                ordinal += 1

    # pass 2 -----------------------------------------------------------------------------------
    def confirm(self, pairs: np.ndarray) -> None:
        """Exact Jaccard for each candidate pair; union-find over the confirmed ones; decide
        which example each cluster keeps.

        Reads the input again in order and parses only the examples in some pair; a pair is
        compared when its later member is read, and a shingle set is dropped once its last
        pair is done, so memory holds only the sets still waiting for a partner."""
        self.result.estimated_pairs = len(pairs)
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
        t = self.cfg.threshold
        uf = UnionFind(0)
        local: dict[int, int] = {}
        members_of: list[int] = []
        edges: dict[int, list[tuple[float, int]]] = {}

        def flush() -> None:
            for o, s in zip(todo_ords, shingle_sets(todo_texts, self.cfg.ngram), strict=True):
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
            self.result.confirmed_pairs += 1
            self.result.confirmed.append((self.ids[a], self.ids[b], j))
            for o in (a, b):
                if o not in local:
                    local[o] = len(members_of)
                    members_of.append(o)
                    uf.parent.append(local[o])
            uf.union(local[a], local[b])
            edges.setdefault(a, []).append((j, b))
            edges.setdefault(b, []).append((j, a))

        for ordinal, src, lineno, line in self._iter_all():
            if ordinal in wanted:
                obj = _parse(src.path, lineno, line)
                todo_ords.append(ordinal)
                todo_texts.append(example_text(obj["messages"]))
                snippets[ordinal] = _snippet(obj["messages"])
                if len(todo_ords) >= self.cfg.batch_size:
                    flush()
        flush()

        for group in uf.groups().values():
            ords = sorted(members_of[g] for g in group)
            self._settle(ords, edges, snippets)

    def _settle(
        self,
        ords: list[int],
        edges: dict[int, list[tuple[float, int]]],
        snippets: dict[int, str],
    ) -> None:
        """Keep every seed of the cluster, else its first example; the others are removed
        with the Jaccard to a kept one, or to the neighbour that joined them to the cluster."""
        seeds = [o for o in ords if self.is_seed[o]]
        keep = seeds or [ords[0]]  # rule: every seed, else the first in input order
        kept = set(keep)
        removed, scores = [], []
        for o in ords:
            if o in kept:
                continue
            direct = [(j, k) for j, k in edges[o] if k in kept]
            if direct:
                j, k = max(direct)
                what = (
                    f"near-copy of seed {self.ids[k]}"
                    if seeds
                    else f"near-duplicate of {self.ids[k]}"
                )
                self.removed[o] = f"{what} (jaccard {j:.2f})"
            else:
                j, k = max(edges[o])
                where = (
                    f"a cluster with seed {self.ids[keep[0]]}"
                    if seeds
                    else f"the cluster kept as {self.ids[keep[0]]}"
                )
                self.removed[o] = f"near-duplicate of {self.ids[k]} (jaccard {j:.2f}), in {where}"
            if seeds:
                self.result.seed_copies += 1
            else:
                self.result.near += 1
            removed.append(o)
            scores.append(round(j, 4))
        cluster = {
            "kind": "near",
            "kept": self.ids[keep[0]],
            "also_kept": [self.ids[k] for k in keep[1:]],
            "removed": [self.ids[o] for o in removed],
            "jaccard": scores,  # each removed one's Jaccard to the example its reason names
            "size": len(ords),
            "has_seed": bool(seeds),
            "_texts": [snippets.get(o, "") for o in [keep[0], *removed[:3]]],
        }
        self.clusters.append(cluster)

    # pass 3 -----------------------------------------------------------------------------------
    def write(self, out: IO[str], reject_rows: list[tuple[dict[str, Any], str, str]]) -> None:
        """Kept lines go to `out` as they came (seeds as records when included); removed ones
        to `reject_rows` with their reason."""
        for ordinal, src, _lineno, line in self._iter_all():
            reason = self.removed.get(ordinal)
            if reason is None:
                if src.is_seed:
                    if self.cfg.include_seeds:
                        out.write(
                            json.dumps(_seed_record(json.loads(line)), ensure_ascii=False) + "\n"
                        )
                        self.result.kept += 1
                else:
                    out.write(line)
                    self.result.kept += 1
                continue
            if src.is_seed and not self.cfg.include_seeds:
                continue  # a seed left out of the pool is not an input example
            obj = json.loads(line)
            if _is_chat(obj):
                rec = _seed_record(obj) if src.is_seed else obj
            elif isinstance(obj, dict):
                rec = obj
            else:
                rec = {"id": self.ids[ordinal], "line": line.rstrip("\n")}
            reject_rows.append((rec, STAGE, reason))

    def exact_clusters(self) -> list[dict[str, Any]]:
        groups: dict[int, list[int]] = {}
        for o, first in self.exact_of.items():
            groups.setdefault(first, []).append(o)
        return [
            {
                "kind": "exact",
                "kept": self.ids[first],
                "also_kept": [],
                "removed": [self.ids[o] for o in sorted(dups)],
                "jaccard": [1.0] * len(dups),
                "size": len(dups) + 1,
                "has_seed": bool(self.is_seed[first]),
            }
            for first, dups in sorted(groups.items())
            if not self.removed.get(first)  # an exact copy of a removed near-duplicate
        ] + [
            {
                "kind": "exact",
                "kept": None,
                "also_kept": [],
                "removed": [self.ids[first], *[self.ids[o] for o in sorted(dups)]],
                "jaccard": [1.0] * (len(dups) + 1),
                "size": len(dups) + 1,
                "has_seed": bool(self.is_seed[first]),
            }
            for first, dups in sorted(groups.items())
            if self.removed.get(first)
        ]

    def report(self) -> dict[str, Any]:
        r = self.result
        near = sorted(self.clusters, key=lambda c: (-c["size"], c["kept"]))
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
                "threshold": self.cfg.threshold,
                "num_perm": self.cfg.num_perm,
                "shingle": f"character {self.cfg.ngram}-grams of normalised user+assistant turns",
                "seed": self.cfg.seed,
                "weights": list(self.cfg.weights),
                "include_seeds": self.cfg.include_seeds,
                "lsh_storage": _redact(self.cfg.lsh_storage) or "memory",
                "representative": "every seed in a cluster, else the first example in input order",
            },
            "lsh": {
                **self.params.describe(),
                "exact_check_floor": round(self.estimate_floor, 4),
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
                "clusters": len(self.clusters),
            },
            "largest_clusters": largest,
            "clusters": clusters + self.exact_clusters(),
        }


def _snippet(messages: Any, limit: int = 240) -> str:
    parts = [
        f"{m.get('role')}: {m.get('content')}"
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("user", "assistant") and m.get("content")
    ]
    text = " | ".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _redact(url: str | None) -> str | None:
    """A storage URL without any password in it."""
    if not url:
        return url
    u = urlparse(url)
    if u.password:
        return url.replace(f":{u.password}@", ":***@")
    return url


def _atomic_lines(path: Path) -> AbstractContextManager[IO[str]]:
    """A text file written under a temporary name and renamed into place when complete."""
    return atomic_file(path)


def drop_stage_rejections(run: Run, stage: str, reason_prefix: str = "") -> None:
    """Forget rows a previous attempt of `stage` wrote to rejected.jsonl, so a rerun does not
    list an example twice (or keep listing one that is now kept)."""
    path = run.file("rejected.jsonl")
    if not path.exists():
        return
    from distill.runs import read_jsonl

    rows = list(read_jsonl(path))
    keep = [
        r
        for r in rows
        if not (r.get("stage") == stage and str(r.get("reason", "")).startswith(reason_prefix))
    ]
    if len(keep) != len(rows):
        atomic_write_jsonl(path, keep)


def _dedupe(
    sources: list[_Source], output: Path, config: DedupeConfig
) -> tuple[_Dedupe, list[tuple[dict[str, Any], str, str]], dict[str, Any]]:
    job = _Dedupe(sources, config)
    seconds = job.result.seconds
    t0 = time.perf_counter()
    pairs = job.index()
    seconds["hash_and_index"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    job.confirm(pairs)
    seconds["confirm"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows: list[tuple[dict[str, Any], str, str]] = []
    with _atomic_lines(output) as out:
        job.write(out, rows)
    seconds["write"] = time.perf_counter() - t0
    report = job.report()
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
    sources = ([_Source(seeds_file, True)] if seeds_file else []) + [_Source(generated, False)]
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
    sources = ([_Source(seeds, True)] if seeds else []) + [_Source(input, False)]
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


__all__ = [
    "DedupeConfig",
    "DedupeResult",
    "LshParams",
    "UnionFind",
    "band_keys",
    "candidate_pairs",
    "dedupe_file",
    "dedupe_run",
    "example_text",
    "jaccard",
    "lsh_params",
    "normalise",
    "recall_params",
    "shingle_hash32",
    "shingle_hash64",
    "shingle_sets",
    "shingles",
    "signatures",
]
