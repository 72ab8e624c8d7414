"""A sign of life from long work, on stderr: a live bar when stderr is a terminal, a plain line
every 10 % when it is not but the input is big (a log still shows that a 1M-line dedupe is
moving), nothing otherwise, so small inputs in tests and scripts print nothing extra.

Only the outermost report shows: MinHash inside dedupe, or validation inside training, stays
quiet, and so does anything started while another live display (a generate or eval bar)
is on the screen.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

BIG_BYTES = 32 << 20  # an input file this large is big: progress even when stderr is a log
BIG_COUNT = 20_000  # so many examples in memory (split's MinHash) are big too
UPDATES = 200  # display updates per task at most: advancing stays one comparison

_reporting: ContextVar[bool] = ContextVar("distill_progress_reporting", default=False)


class Meter:
    """How far a task is. `update` and `advance` cost a comparison until the display is due."""

    def __init__(self, total: int | None, show: Callable[[int], None] | None) -> None:
        self.total = total
        self.done = 0
        self._show = show
        self._step = max(1, total // UPDATES) if total else 1 << 20
        self._due = self._step if show is not None else sys.maxsize

    def update(self, done: int) -> None:
        """Set how much is done (bytes read, examples hashed, ...)."""
        self.done = done
        if done >= self._due:
            self._due = done + self._step
            if self._show is not None:
                self._show(done)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def each(self, items: Iterable[T]) -> Iterator[T]:
        """The items, advancing by one after each."""
        for item in items:
            yield item
            self.advance()


@contextmanager
def progress(
    description: str, total: int | None = None, *, big: bool = False, unit: str = ""
) -> Iterator[Meter]:
    """A Meter for one task. `big`: also report when stderr is not a terminal. `unit="bytes"`
    shows sizes (MB) instead of counts."""
    if _reporting.get() or _another_live_display():
        yield Meter(total, None)
        return
    token = _reporting.set(True)
    try:
        if _stderr_is_terminal():
            with _bar(description, total, unit) as show:
                meter = Meter(total, show)
                yield meter
                show(meter.done)
        elif big:
            lines = _Lines(description, total, unit)
            meter = Meter(total, lines.show)
            yield meter
            lines.finish(meter.done)
        else:
            yield Meter(total, None)
    finally:
        _reporting.reset(token)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _another_live_display() -> bool:
    """A rich live display (another command's bar) is running: a second one would garble it."""
    return any(type(t).__name__ == "_RefreshThread" for t in threading.enumerate())


@contextmanager
def _bar(description: str, total: int | None, unit: str) -> Iterator[Callable[[int], None]]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn() if unit == "bytes" else MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


class _Lines:
    """Plain lines for a log: one per 10 % (or per 10 s when the total is unknown), then done."""

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.start = self.last = time.monotonic()
        self.decile = 0

    def show(self, done: int) -> None:
        now = time.monotonic()
        if self.total:
            decile = min(9, done * 10 // self.total)
            if decile <= self.decile:
                return
            self.decile = decile
            where = f"{decile * 10}% ({self._amount(done)} of {self._amount(self.total)})"
        else:
            if now - self.last < 10:
                return
            where = self._amount(done)
        self.last = now
        self._print(f"{where}, {now - self.start:.0f} s")

    def finish(self, done: int) -> None:
        self._print(f"done, {self._amount(done)} in {time.monotonic() - self.start:.0f} s")

    def _amount(self, n: int) -> str:
        return f"{n / 1e6:,.1f} MB" if self.unit == "bytes" else f"{n:,}"

    def _print(self, text: str) -> None:
        print(f"{self.description}: {text}", file=sys.stderr, flush=True)
