"""The worker loop: plan points through a chat writer, `concurrency` at a time, until --n
chats pass; each outcome filed as it comes (generated.jsonl, or rejected.jsonl with the
reason) and counted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

from distill.runs import Run
from distill.stages.generate.budget import OutOfBudget
from distill.stages.generate.outcomes import Outcome, example_of, rejected_row
from distill.stages.generate.plan import PlanPoint, current_point
from distill.stages.generate.progress import Progress
from distill.stages.generate.teacher import STAGE
from distill.stages.generate.writer import Writer
from distill.style import StyleSpec

Write = Callable[[PlanPoint], Awaitable[Outcome]]


class Worker:
    def __init__(
        self,
        run: Run,
        spec: StyleSpec,
        teacher: str,
        progress: Progress,
        ids: set[str],
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.spec, self.teacher, self.progress, self.ids = spec, teacher, progress, ids
        self.on_progress = on_progress
        self.writer = Writer(run)
        self.out_of_budget = False
        self.last_planned = -1  # the highest plan index taken this session

    async def run(self, write: Write, points: Iterator[PlanPoint], concurrency: int) -> None:
        """Take points in plan order while fewer than --n are accepted or in flight, so a
        rejected point is replaced by the next one; stop when --n pass, the points run out,
        or the budget cannot pay for the next call (that point is left for a rerun)."""
        in_flight = 0
        changed = asyncio.Event()

        def room() -> bool:
            return self.progress.generated + in_flight < self.progress.total

        async def worker() -> None:
            nonlocal in_flight
            while not self.out_of_budget:
                if not room():
                    if not in_flight:
                        return
                    changed.clear()
                    await changed.wait()
                    continue
                point = next(points, None)
                if point is None:
                    return
                in_flight += 1
                self.last_planned = max(self.last_planned, point.plan_index)
                current_point.set(point.plan_index)
                try:
                    self.file(await write(point))
                except OutOfBudget:
                    self.out_of_budget = True
                finally:
                    in_flight -= 1
                    changed.set()

        wanted = self.progress.total - self.progress.generated
        workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, wanted))]
        flusher = asyncio.create_task(self.writer.run_periodically())
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            self.writer.flush_now()

    def file(self, outcome: Outcome) -> None:
        """An outcome to its file; a chat identical to one already written is rejected."""
        if outcome.exchanges is None:
            self.writer.rejected.append(rejected_row(outcome, self.teacher))
            self.progress.rejected += 1
        else:
            example = example_of(self.spec, outcome, self.teacher)
            if example.id in self.ids:
                reason = f"duplicate: same conversation as {example.id}"
                self.writer.rejected.append((example.to_record(), STAGE, reason))
                self.progress.rejected += 1
            else:
                self.ids.add(example.id)
                self.writer.generated.append(example.to_record())
                self.progress.generated += 1
        if self.on_progress:
            self.on_progress(self.progress)
