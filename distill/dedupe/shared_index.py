"""`--index redis://HOST:PORT/NAME`: a named dedupe index in Redis that many processes and
machines share. It holds the MinHash settings it was made with, one entry per shard (a run or
an --input file, in the order shards registered) and, per indexed example, its LSH band
buckets, 8-bit signature, text digest, id and compressed normalised text, so a shard on another
machine can compare against it exactly. Nothing is deleted: the index is the record of what
was seen."""

from __future__ import annotations

import json
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from distill.dedupe.redis_lsh import connect, redact
from distill.errors import RunError, UsageError

ORDER_BITS = 32  # an example's order key: shard position << 32 | its ordinal in the shard
READY = ("indexed", "done")  # shard states whose examples are all in the index
DROPPED = "dropped"

# claim a position for a shard, or find the one it claimed before (a rerun after a kill)
_REGISTER = """
local pos = redis.call('HGET', KEYS[1], ARGV[1])
if pos then return {tonumber(pos), 0} end
pos = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], pos)
return {pos, 1}
"""


@dataclass(frozen=True)
class Earlier:
    """One indexed example a shard compares against."""

    order: int
    id: str
    is_seed: bool
    text: str

    @property
    def position(self) -> int:
        return self.order >> ORDER_BITS


def parse_index_url(url: str) -> tuple[str, int, int, str]:
    """redis://HOST[:PORT]/NAME[?db=N] -> (host, port, db, NAME)."""
    u = urlparse(url)
    name = u.path.strip("/")
    usage = f"--index {redact(url)}: expected redis://HOST:PORT/NAME (NAME: letters, digits, . _ -)"
    if u.scheme != "redis" or not u.hostname or not name:
        raise UsageError(usage)
    if not all(c.isalnum() or c in "._-" for c in name):
        raise UsageError(usage)
    try:
        port = u.port or 6379
        db = int(parse_qs(u.query).get("db", ["0"])[0])
    except ValueError:
        raise UsageError(usage) from None
    return u.hostname, port, db, name


class SharedIndex:
    """A shard's view of the index: it registers (unless it only checks --against), adds its
    examples, waits for every earlier shard to finish indexing, and reads what they hold."""

    def __init__(
        self, url: str, settings: dict[str, Any], against: bool, check: bool = True
    ) -> None:
        host, port, db, self.name = parse_index_url(url)
        self.url = url
        self.against = against
        self.client = connect(url, "--index", host, port, db)
        self.prefix = f"distill:index:{self.name}:"
        self.position = 0  # this shard's place in the order; 0 until opened
        self.visible: set[int] = set()  # earlier shards this one compares against
        self._sources: dict[int, str] = {}
        if check:
            self._check_settings(settings)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    def _check_settings(self, settings: dict[str, Any]) -> None:
        """The index keeps the MinHash settings of its first shard; any other is an error."""
        mine = json.dumps(settings, sort_keys=True)
        if self.against:
            stored = self.client.get(self.key("settings"))
            if stored is None:
                raise UsageError(
                    f"--index {redact(self.url)}: no index named {self.name} there; "
                    "index a run into it first (distill dedupe --index without --against)"
                )
        else:
            self.client.set(self.key("settings"), mine, nx=True)
            stored = self.client.get(self.key("settings"))
        theirs = json.loads(stored)
        if theirs != settings:
            diff = ", ".join(
                f"{k} {theirs.get(k)} (this run: {settings.get(k)})"
                for k in sorted(set(theirs) | set(settings))
                if theirs.get(k) != settings.get(k)
            )
            raise UsageError(
                f"--index {redact(self.url)}: the index was made with other MinHash settings: "
                f"{diff}; rerun with the index's settings or use another index name"
            )

    def open(self, shard_id: str, label: str) -> None:
        """Register this shard (or find its earlier registration) and fix which earlier shards
        it compares against: every lower position, or with --against every shard so far."""
        if self.against:
            last = int(self.client.get(self.key("next")) or 0)
            self.visible = set(range(1, last + 1))
        else:
            script = self.client.register_script(_REGISTER)
            pos, _new = script(keys=[self.key("shards"), self.key("next")], args=[shard_id])
            self.position = int(pos)
            shard = self.key("shard", self.position)
            self.client.hsetnx(shard, "state", "indexing")
            self.client.hset(
                shard,
                mapping={
                    "id": shard_id,
                    "source": f"{socket.gethostname()}:{label}",
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
            self.visible = set(range(1, self.position))
        for p in list(self.visible):
            if self.client.hget(self.key("shard", p), "state") == b"dropped":
                self.visible.discard(p)

    def add(
        self,
        ordinals: Iterable[int],
        ids: list[str],
        seeds: list[bool],
        digests: list[bytes],
        low: np.ndarray,
        keys: np.ndarray,
        texts: list[bytes],
    ) -> None:
        """Index a batch of this shard's examples (idempotent: a rerun writes the same keys)."""
        pipe = self.client.pipeline(transaction=False)
        low_key, rec_key = self.key("low", self.position), self.key("rec", self.position)
        lows, recs = {}, {}
        for k, o in enumerate(ordinals):
            order = (self.position << ORDER_BITS) | o
            for band, bucket in enumerate(keys[k].tolist()):
                pipe.sadd(self.key("b", band, f"{bucket:016x}"), order)
            lows[o] = digests[k] + low[k].tobytes()
            recs[o] = json.dumps([ids[k], seeds[k]]).encode() + b"\n" + texts[k]
        if lows:
            pipe.hset(low_key, mapping=lows)  # type: ignore[arg-type]
            pipe.hset(rec_key, mapping=recs)  # type: ignore[arg-type]
        pipe.execute()

    def mark(self, state: str, **info: object) -> None:
        self.client.hset(self.key("shard", self.position), mapping={"state": state, **info})  # type: ignore[arg-type]

    def wait_for_earlier(self, timeout: float, note: Callable[[str], None] | None = None) -> None:
        """Block until every earlier shard has all its examples in the index: only then is
        what this shard keeps fixed. A note every 30 s says which shards it waits for."""
        note = note or (lambda line: print(line, file=sys.stderr, flush=True))
        start = last_note = time.monotonic()
        while True:
            pipe = self.client.pipeline(transaction=False)
            order = sorted(self.visible)
            for p in order:
                pipe.hmget(self.key("shard", p), "state", "source")
            waiting = []
            for p, (state, source) in zip(order, pipe.execute(), strict=True):
                if state == b"dropped":
                    self.visible.discard(p)
                elif state is None or state.decode() not in READY:
                    waiting.append(f"{p} ({source.decode() if source else 'starting'})")
            if not waiting:
                return
            now = time.monotonic()
            if timeout and now - start >= timeout:
                raise RunError(
                    f"--index {redact(self.url)}: earlier shard(s) {', '.join(waiting)} still "
                    f"indexing after {timeout:.0f} s; rerun them on the same input (they resume), "
                    f"or drop them with distill dedupe --index URL --drop-shard N"
                )
            if now - last_note >= 30:
                note(
                    f"dedupe: waiting for earlier shard(s) {', '.join(waiting)} to finish indexing"
                )
                last_note = now
            time.sleep(0.2)

    def candidates(self, keys: np.ndarray) -> list[list[int]]:
        """Per row of band keys, the order keys of earlier visible examples in a shared bucket."""
        pipe = self.client.pipeline(transaction=False)
        for row in keys.tolist():
            for band, bucket in enumerate(row):
                pipe.smembers(self.key("b", band, f"{bucket:016x}"))
        replies = pipe.execute()
        bands = keys.shape[1]
        out = []
        for i in range(keys.shape[0]):
            found: set[int] = set()
            for members in replies[i * bands : (i + 1) * bands]:
                found.update(int(m) for m in members)
            out.append(sorted(o for o in found if (o >> ORDER_BITS) in self.visible))
        return out

    def signatures(self, orders: list[int], num_perm: int) -> dict[int, tuple[bytes, np.ndarray]]:
        """(text digest, 8-bit signature) of indexed examples, by order key."""
        return {
            o: (blob[:16], np.frombuffer(blob[16 : 16 + num_perm], dtype=np.uint8))
            for o, blob in self._fetch("low", orders).items()
        }

    def examples(self, orders: list[int]) -> dict[int, Earlier]:
        """Id, seed flag and normalised text of indexed examples, by order key."""
        out = {}
        for o, blob in self._fetch("rec", orders).items():
            head, _, packed = blob.partition(b"\n")
            rid, is_seed = json.loads(head)
            out[o] = Earlier(o, rid, is_seed, zlib.decompress(packed).decode("utf-8"))
        return out

    def _fetch(self, what: str, orders: list[int]) -> dict[int, bytes]:
        by_shard: dict[int, list[int]] = {}
        for o in orders:
            by_shard.setdefault(o >> ORDER_BITS, []).append(o)
        pipe = self.client.pipeline(transaction=False)
        mask = (1 << ORDER_BITS) - 1
        for p, os_ in by_shard.items():
            pipe.hmget(self.key(what, p), [o & mask for o in os_])
        out = {}
        for os_, blobs in zip(by_shard.values(), pipe.execute(), strict=True):
            for o, blob in zip(os_, blobs, strict=True):
                if blob is None:  # a finished shard always has every entry it bucketed
                    raise RunError(
                        f"--index {redact(self.url)}: shard {o >> ORDER_BITS} lacks example "
                        f"{o & mask}; the index was changed by hand: rebuild it under a new name"
                    )
                out[o] = blob
        return out

    def source(self, position: int) -> str:
        """'shard N (host:path)', for a rejected example's reason."""
        if position not in self._sources:
            src = self.client.hget(self.key("shard", position), "source")
            self._sources[position] = src.decode() if src else "?"
        return f"shard {position} ({self._sources[position]})"

    def drop(self, position: int) -> None:
        """Leave a shard out of every later comparison (its keys stay, unread)."""
        if not self.client.exists(self.key("shard", position)):
            raise UsageError(f"--drop-shard {position}: index {self.name} has no such shard")
        self.client.hset(self.key("shard", position), "state", DROPPED)

    def close(self) -> None:
        self.client.close()


def pack_text(text: str) -> bytes:
    return zlib.compress(text.encode("utf-8"), 6)
