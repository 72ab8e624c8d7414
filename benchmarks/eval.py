"""What `distill eval` costs beyond the model calls, and whether its chrF is sacrebleu's.

1. The eval stage on N synthetic held-out examples with instant fake backends (every call
   is cached in calls.sqlite, as in a real run), against the baseline of the same calls
   through `cached_chat` alone: the ratio is eval's scoring and report overhead.
2. chrF: our few-line implementation against sacrebleu's (when importable): the largest
   difference on random sentence pairs, and the speed ratio.

    .venv/bin/python benchmarks/eval.py [N]
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from distill.backends.base import FakeBackend, cached_chat
from distill.calls import CallLog
from distill.runs import Run, atomic_write_jsonl
from distill.stages import evaluate as ev
from distill.stages.metrics import chrf

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "so sorry for the wait i've flagged your order GL-48213 water it weekly plant refund "
    "today tracking courier replacement happy to help just reply with the new address"
).split()


def sentence(rng: random.Random, k: int = 14) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(4, k))).capitalize() + "."


def make_run(root: Path, n: int) -> Run:
    rng = random.Random(0)
    run = Run.create("bench", outputs=root)
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"q{i}: {sentence(rng)}"},
                {"role": "assistant", "content": sentence(rng)},
            ]
        }
        for i in range(n)
    ]
    atomic_write_jsonl(run.file("eval.jsonl"), rows)
    atomic_write_jsonl(run.file("train.jsonl"), rows[: n // 2])
    run.update_manifest(
        student={"model": "fake:student", "base": "fake:base"},
        inputs={"style": {"path": str(ROOT / "seeds" / "greenleaf.style.toml")}},
    )
    return run


def reply(messages: list[dict]) -> str:
    return "Sorry about that! " + messages[-1]["content"][::-1][:80]


def verdict(messages: list[dict]) -> str:
    return '{"reason": "r", "winner": "A"}'


def backends() -> dict:
    return {
        "fake:student": FakeBackend(default=reply, name="student"),
        "fake:base": FakeBackend(default=reply, name="base"),
        "fake:judge": FakeBackend(default=verdict, name="judge"),
    }


def bench_stage(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "a", n)
        t0, c0 = time.perf_counter(), time.process_time()
        report = ev.evaluate(run, judge="fake:judge", backends=backends(), embedder=None)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        calls = report["usage"]["calls"]

        # baseline: the same number of calls through cached_chat, no scoring, no report
        base_run = make_run(Path(tmp) / "b", n)
        log = CallLog(base_run.file("calls.sqlite"))
        fake = FakeBackend(default=reply)

        async def only_calls() -> None:
            sem = asyncio.Semaphore(8)

            async def one(i: int) -> None:
                async with sem:
                    msgs = [{"role": "user", "content": f"call {i}"}]
                    await cached_chat(fake, log, "eval", msgs, temperature=0.0, max_tokens=256)

            await asyncio.gather(*(one(i) for i in range(calls)))

        b0, bc0 = time.perf_counter(), time.process_time()
        asyncio.run(only_calls())
        b_wall, b_cpu = time.perf_counter() - b0, time.process_time() - bc0
        log.close()

        t1 = time.perf_counter()
        ev.evaluate(run, judge="fake:judge", backends=backends(), embedder=None)
        rerun = time.perf_counter() - t1
    print(f"eval stage, {n} examples + probe, {calls} calls through calls.sqlite")
    print(f"  eval: {wall:.2f} s wall, {1000 * cpu / calls:.2f} ms CPU per call")
    print(f"  calls alone: {b_wall:.2f} s wall, {1000 * b_cpu / calls:.2f} ms CPU per call")
    print(f"  ratio eval / calls alone (wall): {wall / b_wall:.2f}")
    print(f"  rerun answered from the cache: {rerun:.2f} s ({wall / rerun:.1f}x faster)")


def bench_chrf() -> None:
    rng = random.Random(1)
    pairs = [(sentence(rng, 40), sentence(rng, 40)) for _ in range(2000)]
    t0 = time.perf_counter()
    ours = [chrf(h, r) for h, r in pairs]
    t_ours = time.perf_counter() - t0
    try:
        from sacrebleu.metrics import CHRF
    except ImportError:
        print(f"chrF: {len(pairs)} pairs in {t_ours:.2f} s; sacrebleu not importable, no check")
        return
    metric = CHRF()
    t0 = time.perf_counter()
    theirs = [metric.sentence_score(h, [r]).score for h, r in pairs]
    t_sb = time.perf_counter() - t0
    worst = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    print(f"chrF vs sacrebleu on {len(pairs)} pairs: max |diff| {worst:.2e}")
    print(f"  time ours / sacrebleu: {t_ours / t_sb:.2f}")


if __name__ == "__main__":
    bench_stage(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
    bench_chrf()
