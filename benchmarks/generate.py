"""Teacher throughput: how close generation gets to the physical limit, and what it costs.

    python benchmarks/generate.py http    # N=2,000 typed requests, 200 ms server, concurrency 64
    flock /tmp/distill-torch.lock python benchmarks/generate.py local --n 10

`http` starts the loopback OpenAI-compatible server (tests/fake_openai_server.py) in its own
process, so only the client's CPU is measured, and prints throughput as a ratio of the limit
(concurrency / latency = 320 req/s) and client CPU ms per request, for our backend and, as the
baseline, the openai SDK + instructor on the same server. `local` runs `distill generate` with
the embedded teacher on CPU and prints seconds per example and the valid-output rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Reply(BaseModel):
    """A typed reply like generation's (a small conversation)."""

    user: str = Field(min_length=1)
    assistant: str = Field(min_length=1)
    turns: int


def start_server(
    latency: float, script: str = "fake_openai_server.py", path: str = "/v1"
) -> tuple[subprocess.Popen[str], str]:
    """A loopback test server (tests/<script>) in its own process; its base URL."""
    server = str(ROOT / "tests" / script)
    proc = subprocess.Popen(
        [sys.executable, server, "--latency", str(latency), "--responder", "conversation"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    return proc, f"http://127.0.0.1:{port}{path}"


async def _drive(call, n: int, concurrency: int) -> tuple[float, float, int]:
    sem = asyncio.Semaphore(concurrency)
    ok = 0

    async def one(i: int) -> None:
        nonlocal ok
        async with sem:
            await call(i)
            ok += 1

    await asyncio.gather(*[one(i) for i in range(min(concurrency, n))])  # warm-up connections
    ok = 0
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*[one(i) for i in range(n)])
    return time.perf_counter() - t0, time.process_time() - c0, ok


def bench_ours(url: str, n: int, concurrency: int) -> tuple[float, float, int]:
    from distill.backends.openai_backend import OpenAIBackend

    backend = OpenAIBackend("gpt-4o-mini", base_url=url, api_key="bench", mode="json_schema")

    async def main() -> tuple[float, float, int]:
        async def call(i: int) -> None:
            msgs = [{"role": "user", "content": f"Write conversation {i} about a late order."}]
            await backend.chat(msgs, response_model=Reply, max_tokens=300, seed=i)

        try:
            return await _drive(call, n, concurrency)
        finally:
            await backend.aclose()

    return asyncio.run(main())


def bench_instructor(url: str, n: int, concurrency: int) -> tuple[float, float, int]:
    import instructor
    from openai import AsyncOpenAI

    client = instructor.from_openai(
        AsyncOpenAI(base_url=url, api_key="bench", max_retries=0), mode=instructor.Mode.TOOLS
    )

    async def main() -> tuple[float, float, int]:
        async def call(i: int) -> None:
            msgs = [{"role": "user", "content": f"Write conversation {i} about a late order."}]
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=msgs, response_model=Reply, max_tokens=300
            )

        return await _drive(call, n, concurrency)

    return asyncio.run(main())


def bench_stage(url: str, n: int, concurrency: int) -> tuple[float, float, int]:
    """The whole `distill generate` loop: prompts, calls.sqlite, validators, appends."""
    from distill.stages.generate import GenerateOptions, generate

    out = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    opts = GenerateOptions(
        seeds=ROOT / "seeds" / "greenleaf.jsonl",
        n=n,
        teacher="openai:gpt-4o-mini",
        base_url=url,
        name="bench",
        concurrency=concurrency,
        outputs=out,
        backend_opts={"api_key": "bench"},
    )
    c0, t0 = time.process_time(), time.perf_counter()
    result = generate(opts)
    return time.perf_counter() - t0, time.process_time() - c0, result.progress.calls


def http(args: argparse.Namespace) -> None:
    proc, url = start_server(args.latency)
    limit = args.concurrency / args.latency
    try:
        print(
            f"loopback server: {args.latency * 1000:.0f} ms latency, concurrency "
            f"{args.concurrency}, limit {limit:.0f} req/s; N={args.n}"
        )
        rows = [
            ("distill openai backend (aiohttp, json_schema)", bench_ours),
            ("distill generate stage (all of it, same backend)", bench_stage),
        ]
        if not args.skip_baseline:
            rows.append(("baseline: openai SDK + instructor TOOLS", bench_instructor))
        for label, fn in rows:
            n = args.n if fn is not bench_instructor else max(200, args.n // 4)
            wall, cpu, ok = fn(url, n, args.concurrency)
            rate = ok / wall
            print(
                f"{label:48s} {rate:6.0f} req/s  {rate / limit:4.2f} of the limit  "
                f"{cpu / ok * 1000:5.2f} ms CPU/request  ({ok} ok, N={n})"
            )
    finally:
        proc.terminate()
        proc.wait(10)


def local(args: argparse.Namespace) -> None:
    from distill.stages.generate import GenerateOptions, generate

    out = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    opts = GenerateOptions(
        seeds=ROOT / "seeds" / "greenleaf.jsonl",
        n=args.n,
        teacher=args.teacher,
        name="bench-local",
        concurrency=args.concurrency,
        max_reasks=args.max_reasks,
        topic_check=not args.no_topic_check,
        outputs=out,
    )
    t_load = time.perf_counter()
    from distill.backends.local import load_model

    load_model(args.teacher.split(":", 1)[1])
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    result = generate(opts)
    wall = time.perf_counter() - t0
    p = result.progress
    calls = p.calls
    print(
        f"teacher {args.teacher} on CPU ({os.cpu_count()} cores), n={p.total} "
        f"({p.planned} planned), batch "
        f"{min(8, args.concurrency)}, max re-asks {args.max_reasks}, topic check "
        f"{'off' if args.no_topic_check else 'on'}; load {load_s:.1f} s"
    )
    print(
        f"{wall / p.planned:6.1f} s per planned example, {wall / max(1, p.generated):6.1f} s per "
        f"accepted example; {p.generated}/{p.planned} planned accepted "
        f"({p.generated / p.planned:.0%}), "
        f"{calls} calls ({p.reasks} re-asks)"
    )
    rejected = out / "bench-local" / "rejected.jsonl"
    if rejected.exists():
        for line in rejected.read_text().splitlines()[:5]:
            print("  rejected:", json.loads(line)["reason"][:150])
    gen = out / "bench-local" / "generated.jsonl"
    if gen.exists():
        for line in gen.read_text().splitlines()[:3]:
            msgs = json.loads(line)["messages"]
            print("  accepted:", " | ".join(m["content"][:90] for m in msgs[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    h = sub.add_parser("http")
    h.add_argument("--n", type=int, default=2000)
    h.add_argument("--concurrency", type=int, default=64)
    h.add_argument("--latency", type=float, default=0.2)
    h.add_argument("--skip-baseline", action="store_true")
    loc = sub.add_parser("local")
    loc.add_argument("--n", type=int, default=10)
    loc.add_argument("--teacher", default="local:smollm2-135m")
    loc.add_argument("--concurrency", type=int, default=8)
    loc.add_argument("--max-reasks", type=int, default=2)
    loc.add_argument("--no-topic-check", action="store_true")
    args = ap.parse_args()
    http(args) if args.part == "http" else local(args)


if __name__ == "__main__":
    main()
