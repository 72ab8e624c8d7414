"""A sign of life from long work, on stderr: a live bar when stderr is a terminal, a plain line
every 10 % when it is not but the work is big and slow (a log still shows that a 1M-line
dedupe is moving), nothing otherwise, so small inputs in tests and scripts print nothing extra.

Only the outermost report shows: MinHash inside dedupe, or validation inside training, stays
quiet, and so does anything started while another live display (a generate or eval bar)
is on the screen.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

T = TypeVar("T")

BIG_BYTES = 32 << 20  # an input file this large is big: progress even when stderr is a log
BIG_COUNT = 20_000  # so many examples in memory (split's MinHash) are big too
UPDATES = 200  # display updates per task at most: advancing stays one comparison

_reporting: ContextVar[bool] = ContextVar("distill_progress_reporting", default=False)


class _Sink(Protocol):
    def show(self, meter: Meter) -> None: ...


class Meter:
    """How far a task is. `update` and `advance` cost a comparison until the display is due."""

    def __init__(self, total: int | None, sink: _Sink | None = None) -> None:
        self.total = total
        self.done = 0
        self._sink = sink
        self._step = max(1, total // UPDATES) if total else 1 << 20
        self._due = self._step if sink is not None else sys.maxsize

    def update(self, done: int) -> None:
        """Set how much is done (bytes read, examples hashed, ...)."""
        self.done = done
        if done >= self._due:
            self._due = done + self._step
            if self._sink is not None:
                self._sink.show(self)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def each(self, items: Iterable[T]) -> Iterator[T]:
        """The items, advancing by one after each."""
        for item in items:
            yield item
            self.advance()


@contextmanager
def progress(
    description: str, total: int | None = None, *, unit: str = "", big: bool | None = None
) -> Iterator[Meter]:
    """A Meter for one task of `total` units: bytes (`unit="bytes"`, shown in MB) or items.
    `big` (reported even when stderr is not a terminal) defaults to `is_big(total, unit)`."""
    if big is None:
        big = is_big(total or 0, unit)
    if _reporting.get() or _another_live_display():
        yield Meter(total)
        return
    token = _reporting.set(True)
    try:
        if _stderr_is_terminal():
            with _bar(description, unit, total) as bar:
                meter = Meter(total, bar)
                yield meter
                bar.show(meter)
        elif big:
            lines = _Lines(description, unit)
            meter = Meter(total, lines)
            yield meter
            lines.finish(meter)
        else:
            yield Meter(total)
    finally:
        _reporting.reset(token)


def is_big(amount: int, unit: str = "") -> bool:
    """Worth a sign of life in a log: BIG_BYTES of input, or BIG_COUNT examples."""
    return amount >= (BIG_BYTES if unit == "bytes" else BIG_COUNT)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _another_live_display() -> bool:
    """A rich live display (another command's bar) is running: a second one would garble it."""
    return any(type(t).__name__ == "_RefreshThread" for t in threading.enumerate())


class _Bar:
    """A rich bar on stderr, gone when the task ends (the command prints its own summary)."""

    def __init__(self, bar: Progress, task: TaskID) -> None:
        self.bar, self.task = bar, task

    def show(self, meter: Meter) -> None:
        self.bar.update(self.task, completed=meter.done, total=meter.total)


@contextmanager
def _bar(description: str, unit: str, total: int | None) -> Iterator[_Bar]:
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

    rich_bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn() if unit == "bytes" else MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with rich_bar:
        yield _Bar(rich_bar, rich_bar.add_task(description, total=total))


class _Lines:
    """Plain lines for a log, so a quick task prints nothing: after the first 5 s, one line
    per 10 % (per 10 s when the total is unknown), at least 5 s apart, and one when done."""

    QUIET_S = 5.0

    def __init__(self, description: str, unit: str) -> None:
        self.description, self.unit = description, unit
        self.start = self.last = time.monotonic()
        self.decile = 0
        self.printed = False

    def show(self, meter: Meter) -> None:
        now = time.monotonic()
        if now - self.last < self.QUIET_S:
            return
        if meter.total:
            decile = meter.done * 10 // meter.total
            if decile <= self.decile or meter.done >= meter.total:  # `finish` says done
                return
            self.decile = decile
            share = meter.done * 100 // meter.total
            where = f"{share}% ({self._amount(meter.done)} of {self._amount(meter.total)})"
        else:
            if now - self.last < 2 * self.QUIET_S:
                return
            where = self._amount(meter.done)
        self.last = now
        self._print(f"{where}, {now - self.start:.0f} s")

    def finish(self, meter: Meter) -> None:
        took = time.monotonic() - self.start
        if self.printed or took >= self.QUIET_S:
            self._print(f"done, {self._amount(meter.done)} in {took:.0f} s")

    def _amount(self, n: int) -> str:
        return f"{n / 1e6:,.1f} MB" if self.unit == "bytes" else f"{n:,}"

    def _print(self, text: str) -> None:
        self.printed = True
        print(f"{self.description}: {text}", file=sys.stderr, flush=True)
