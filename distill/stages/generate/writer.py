"""Whole-line appends to generated.jsonl / rejected.jsonl, batched and fsynced off the event
loop every `every_s`. A kill loses at most the unflushed lines, and a rerun replays those from
calls.sqlite without sending anything."""

from __future__ import annotations

import asyncio
from typing import Any

from distill.runs import Run, append_jsonl

Row = tuple[dict[str, Any], str, str]  # (record, stage, reason), as Run.reject takes them


class Writer:
    def __init__(self, run: Run, every_s: float = 0.25) -> None:
        self.run = run
        self.every_s = every_s
        self.generated: list[dict[str, Any]] = []
        self.rejected: list[Row] = []
        self._lock = asyncio.Lock()

    def _take(self) -> tuple[list[dict[str, Any]], list[Row]]:
        gen, rej = self.generated, self.rejected
        self.generated, self.rejected = [], []
        return gen, rej

    def _write(self, gen: list[dict[str, Any]], rej: list[Row]) -> None:
        if gen:
            append_jsonl(self.run.file("generated.jsonl"), gen)
        if rej:
            self.run.reject(rej)

    async def flush(self) -> None:
        async with self._lock:
            gen, rej = self._take()
            if gen or rej:
                await asyncio.to_thread(self._write, gen, rej)

    def flush_now(self) -> None:
        self._write(*self._take())

    async def run_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self.flush()
