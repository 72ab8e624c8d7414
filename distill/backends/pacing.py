"""When to send: retry timing (backoff honouring Retry-After) and rpm/tpm limits, shared by
the HTTP backends."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Mapping
from typing import Any


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a server asked us to wait (Retry-After seconds or HTTP date, retry-after-ms)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(ra)
            return max(0.0, dt.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def backoff_s(attempt: int, base: float, retry_after: float | None, cap: float = 30.0) -> float:
    """Exponential backoff with jitter; a server's Retry-After wins when it is longer."""
    delay = min(cap, base * (2**attempt)) * (0.5 + random.random() / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 120.0))
    return delay


RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


class RateLimiter:
    """A token bucket refilled at `per_minute / 60` a second holding one second's worth, so
    requests are spread evenly. A request bigger than the bucket runs it into debt, which
    later requests wait out. `None` means unlimited."""

    def __init__(self, per_minute: float | None) -> None:
        self.rate = per_minute / 60 if per_minute else 0.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        if not self.rate:
            return
        need = min(amount, self.capacity)
        async with self._lock:
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.level >= need:
                    self.level -= amount
                    return
                await asyncio.sleep((need - self.level) / self.rate)


class Limits:
    """rpm and tpm limits shared by every call of one backend."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.rpm = RateLimiter(rpm)
        self.tpm = RateLimiter(tpm)

    async def acquire(self, tokens: int) -> None:
        await self.rpm.acquire(1)
        await self.tpm.acquire(tokens)


def estimate_tokens(messages: list[dict[str, Any]], max_tokens: int | None) -> int:
    """A cheap upper-ish estimate for the tpm limiter (4 characters a token)."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return chars // 4 + 4 * len(messages) + (max_tokens or 0)
