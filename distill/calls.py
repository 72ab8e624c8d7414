"""calls.sqlite: every model call (request, response, tokens, cost, latency), and the cache
that makes a rerun after a crash re-send nothing that already finished."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, RunError

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT,
    error TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    latency_s REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    cached_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS calls_stage ON calls(stage);
"""
COLUMNS = (
    "key, stage, model, request, response, error, prompt_tokens, completion_tokens, cost_usd, "
    "latency_s, attempts, created_at, cached_tokens"
)


# What survives what. SQLite runs in WAL mode and every put is a commit. With synchronous=NORMAL
# (the default) a commit is in the OS's hands before `put` returns, so a killed process loses no
# finished call; the log is synced to disk only at checkpoints (about every 4 MB of log), so a
# power loss or OS crash can lose the calls committed since the last one (they are sent again on
# resume). FULL syncs at every commit and survives that too, but costs throughput: each sync
# blocks the event loop (benchmarks/generate.py: 0.53-0.59 vs 0.70-0.88 of the limit).
SYNC_ENV = "DISTILL_CALLS_SYNC"
SYNC_MODES = ("NORMAL", "FULL")


def synchronous() -> str:
    """NORMAL, or FULL when DISTILL_CALLS_SYNC asks for it."""
    value = os.environ.get(SYNC_ENV, "NORMAL").strip().upper()
    if value not in SYNC_MODES:
        raise ConfigError(f"{SYNC_ENV}={value!r}: use NORMAL (the default) or FULL")
    return value


def request_key(model: str, request: Any) -> str:
    """Stable hash of what is sent: same model and request, same key."""
    blob = json.dumps({"model": model, "request": request}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class CallRecord:
    key: str
    stage: str
    model: str
    request: Any
    response: Any
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 1
    cached_tokens: int = 0  # prompt tokens served from the provider's prompt cache


class CallLog:
    """A thread-safe SQLite log. A row with a response is a finished call: `get` returns it
    so the caller re-sends nothing. Commits after every put, so a killed process loses at most
    the calls in flight; see SYNC_ENV above for a power loss."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        sync = synchronous()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={sync}")
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(calls)")}
            if "cached_tokens" not in columns:  # a log written before prompt caching counted
                self._db.execute(
                    "ALTER TABLE calls ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0"
                )
            self._db.commit()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise RunError(
                f"{self.path}: not a usable call log ({e}); move it aside to start a new one "
                "(calls it held will be sent again)"
            ) from None

    def get(self, key: str) -> CallRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT key, stage, model, request, response, error, prompt_tokens, "
                "completion_tokens, cost_usd, latency_s, attempts, cached_tokens FROM calls "
                "WHERE key = ? AND response IS NOT NULL",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return CallRecord(
            key=row[0],
            stage=row[1],
            model=row[2],
            request=json.loads(row[3]),
            response=json.loads(row[4]),
            error=row[5],
            prompt_tokens=row[6],
            completion_tokens=row[7],
            cost_usd=row[8],
            latency_s=row[9],
            attempts=row[10],
            cached_tokens=row[11],
        )

    def put(self, rec: CallRecord) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO calls ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    rec.key,
                    rec.stage,
                    rec.model,
                    json.dumps(rec.request, ensure_ascii=False, default=str),
                    None
                    if rec.response is None
                    else json.dumps(rec.response, ensure_ascii=False, default=str),
                    rec.error,
                    rec.prompt_tokens,
                    rec.completion_tokens,
                    rec.cost_usd,
                    rec.latency_s,
                    rec.attempts,
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    rec.cached_tokens,
                ),
            )
            self._db.commit()

    def totals(self, stage: str | None = None) -> dict[str, float]:
        """Calls, tokens and dollars so far (for status and budget caps)."""
        where, args = ("WHERE stage = ?", (stage,)) if stage else ("", ())
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(prompt_tokens),0), COALESCE(SUM(completion_tokens),0), "
                f"COALESCE(SUM(cost_usd),0), COALESCE(SUM(cached_tokens),0) FROM calls {where}",
                args,
            ).fetchone()
        return {
            "calls": row[0],
            "prompt_tokens": row[1],
            "completion_tokens": row[2],
            "cost_usd": round(row[3], 6),
            "cached_tokens": row[4],
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()
