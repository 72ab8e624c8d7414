"""Client CPU per request: the instructor path (anthropic:, google:) next to the fast path
(openai:), all against one loopback server in its own process, so only the client is measured.

    python benchmarks/providers.py                      # N=400 typed requests each, 100 ms, c=32
    python benchmarks/providers.py --n 2000 --latency 0.2 --concurrency 64

Each backend makes the same typed call (a small conversation, validated) through
`Backend.chat`, the path generate and eval take. Printed: throughput as a share of the limit
(concurrency / latency), client CPU ms per request, and each path's CPU as a multiple of the
fast path's, measured in this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5", "google:gemini-2.5-flash"]


class Exchange(BaseModel):
    user: str = Field(min_length=1)
    assistant: str = Field(min_length=1)


class Conversation(BaseModel):
    """A small conversation, like generation's."""

    exchanges: list[Exchange] = Field(min_length=1, max_length=1)


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    """The provider test server (Messages, generateContent and OpenAI's API) in a process."""
    from generate import start_server as start

    return start(latency, "fake_provider_server.py", "")


def bench(model: str, root: str, n: int, concurrency: int) -> tuple[float, float, int]:
    """(wall s, client CPU s, replies) for n typed calls of `model`."""
    from distill.backends import get_backend

    url = root + "/v1" if model.startswith("openai:") else root
    backend = get_backend(model, base_url=url, api_key="bench", timeout=120)

    async def main() -> tuple[float, float, int]:
        sem = asyncio.Semaphore(concurrency)
        ok = 0

        async def one(i: int) -> None:
            nonlocal ok
            async with sem:
                ask = [{"role": "user", "content": f"Write a chat. Topic: order {i}"}]
                await backend.chat(ask, response_model=Conversation, max_tokens=200)
                ok += 1

        await backend.chat([{"role": "user", "content": "warm up"}], response_model=Conversation)
        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        await backend.aclose()  # type: ignore[attr-defined]
        return wall, cpu, ok

    return asyncio.run(main())


def run(args: argparse.Namespace) -> None:
    proc, root = start_server(args.latency)
    limit = args.concurrency / args.latency
    try:
        rows = {m: bench(m, root, args.n, args.concurrency) for m in MODELS}
    finally:
        proc.terminate()
    base = rows[MODELS[0]][1] / rows[MODELS[0]][2]
    print(f"N={args.n} typed requests, {args.latency * 1000:.0f} ms server, c={args.concurrency}")
    for model, (wall, cpu, ok) in rows.items():
        per = cpu / ok
        path = "fast path" if model == MODELS[0] else "instructor"
        print(
            f"{model:28s} {path:10s} {ok / wall / limit:4.2f} of the limit  "
            f"{per * 1000:5.2f} ms CPU/request  {per / base:4.1f}x the fast path's CPU"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=32)
    run(ap.parse_args())


if __name__ == "__main__":
    main()
