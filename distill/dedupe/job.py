"""What one dedupe run knows: its knobs, its inputs, what it has found so far, and how a line
of the input becomes a chat record."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distill.minhash import DEFAULT_NUM_PERM, DEFAULT_SEED, NGRAM, LshParams, lsh_params
from distill.records import content_id
from distill.runs import jsonl_lines

if TYPE_CHECKING:
    from distill.dedupe.shared_index import SharedIndex

STAGE = "dedupe"
DEFAULT_THRESHOLD = 0.8
BATCH = 4096  # documents hashed together


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
    index: str | None = (
        None  # a shared index, "redis://HOST:PORT/NAME" (distill.dedupe.shared_index)
    )
    against: bool = False  # with index: check against it without adding this input
    index_wait: float = 0.0  # seconds to wait for earlier shards to finish indexing; 0: no limit
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
    indexed: int = 0  # removed as duplicates of examples in earlier shards of the index
    shard: int = 0  # this input's position in the index (0: --against, or no index)
    index_name: str | None = None
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
        return self.invalid + self.exact + self.near + self.seed_copies + self.indexed


@dataclass(frozen=True)
class Source:
    """One input file: the seeds (kept over their near-copies) or the examples to dedupe."""

    path: Path
    is_seed: bool


class Job:
    """The state the three passes share: every example's id and fate, by ordinal (its
    position across the sources, seeds first)."""

    def __init__(self, sources: list[Source], config: DedupeConfig) -> None:
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
        self.shared: SharedIndex | None = None  # --index, opened by the stage
        # with an index: each hashed example's ordinal, band keys and 8-bit signature, kept
        # after pass 1 to look it up in the index
        self.local: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def input_bytes(self) -> int:
        return sum(src.path.stat().st_size for src in self.sources if src.path.exists())

    def lines(self) -> Iterator[tuple[int, Source, int, str, int]]:
        """(ordinal, source, line number, line, bytes read of all sources) for every line."""
        ordinal = 0
        before = 0
        for src in self.sources:
            done = 0
            for lineno, line, done in jsonl_lines(src.path):
                yield ordinal, src, lineno, line, before + done
                ordinal += 1
            before += done


def seed_record(obj: Any) -> dict[str, Any]:
    """A seed line as a deduped.jsonl record: id, messages, meta.source = "seed"."""
    messages = obj["messages"]
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    rid = (
        obj.get("id") if isinstance(obj.get("id"), str) and obj.get("id") else content_id(messages)
    )
    return {"id": rid, "messages": messages, "meta": {**meta, "source": "seed"}}


def record_id(obj: dict[str, Any]) -> str:
    rid = obj.get("id")
    return rid if isinstance(rid, str) and rid else content_id(obj["messages"])


def is_chat(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("messages"), list)
        and all(isinstance(m, dict) for m in obj["messages"])
    )


def snippet(messages: Any, limit: int = 240) -> str:
    """The user and assistant turns on one line, cut to `limit` characters (for the report)."""
    parts = [
        f"{m.get('role')}: {m.get('content')}"
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("user", "assistant") and m.get("content")
    ]
    text = " | ".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."
