"""How fast `distill review` answers a key: accept (append + fsync + row update) against
moving the cursor (the floor: a key press and a redraw), and against rebuilding the whole
list after each decision (the first version). Headless textual, so no terminal I/O counted.

    .venv/bin/python benchmarks/review_keys.py [N ...]
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from distill.records import Example
from distill.review_app import ReviewApp, ReviewScreen
from distill.runs import Run, atomic_write_jsonl
from distill.stages.review import open_session

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."
KEYS = 30


def make_run(root: Path, n: int) -> Run:
    rnd = random.Random(n)
    recs = []
    for i in range(n):
        user = f"My order GL-{10000 + i} is late, " + "really " * rnd.randint(0, 30) + "late."
        reply = f"Sorry for the wait! I've checked GL-{10000 + i} and it ships today."
        msgs = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
            {"role": "assistant", "content": reply},
        ]
        recs.append(Example(messages=msgs, meta={"topic": rnd.choice("abc")}).to_record())
    run = Run.create(f"bench{n}", outputs=root)
    run.update_manifest(inputs={"style": {"path": str(ROOT / "seeds/greenleaf.style.toml")}})
    atomic_write_jsonl(run.file("generated.jsonl"), recs)
    return run


def seconds_per_key(run: Run, key: str) -> float:
    app = ReviewApp(open_session(run))

    async def go() -> float:
        async with app.run_test() as pilot:
            await pilot.pause()
            t = time.perf_counter()
            for _ in range(KEYS):
                await pilot.press(key)
                await pilot.pause()
            return (time.perf_counter() - t) / KEYS

    return asyncio.run(go())


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [300, 3000]
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            run = make_run(Path(tmp), n)
            t = time.perf_counter()
            open_session(run)
            load = time.perf_counter() - t
            move = seconds_per_key(run, "n")
            run.file("review.jsonl").unlink(missing_ok=True)
            accept = seconds_per_key(run, "a")
            run.file("review.jsonl").unlink(missing_ok=True)
            incremental = ReviewScreen.row_decided
            ReviewScreen.row_decided = lambda self, ex_id: self.refresh_rows(after=ex_id)  # type: ignore[method-assign]
            try:
                rebuild = seconds_per_key(run, "a")
            finally:
                ReviewScreen.row_decided = incremental  # type: ignore[method-assign]
            print(
                f"N={n}: load+flags {load * 1000:.0f} ms; per key: move {move * 1000:.0f} ms, "
                f"accept {accept * 1000:.0f} ms, accept with full rebuild {rebuild * 1000:.0f} ms; "
                f"accept/move = {accept / move:.2f}, rebuild/accept = {rebuild / accept:.2f}"
            )


if __name__ == "__main__":
    main()
