"""Large runs: how much of generate's prompt the provider's cache can serve, whether a longer
shared prefix (more seed chats) pays, and the Batch API's cost next to the live path's.

    python benchmarks/batch.py                 # --n 2000 per configuration
    python benchmarks/batch.py --n 300 --examples 3,16

Runs the whole `distill generate` (greenleaf seeds, gpt-4o-mini as the teacher string) against
loopback servers that simulate OpenAI's prompt cache (tests/fake_openai_server.py PromptCache:
o200k tokens of the output schema then the messages; a repeated prefix of 1,024 tokens plus
steps of 128 is cached). For each number of seed chats shown it prints the prompt tokens per
request, the share of prompt tokens in a prefix shared with an earlier request (any length),
the share OpenAI would bill as cached (the 1,024 floor), and what the run costs at three
models' prices with and without that discount. Then the same plan through `--batch`
(tests/fake_batch_server.py) and live, and the ratio of their costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

MODELS = ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4o")


def run(server_url: str, n: int, examples: int, batch: bool, name: str, out: Path):
    from distill.stages.generate import GenerateOptions, generate

    opts = GenerateOptions(
        seeds=ROOT / "seeds" / "greenleaf.jsonl",
        n=n,
        teacher="openai:gpt-4o-mini",
        base_url=server_url,
        name=name,
        concurrency=None if batch else 64,
        examples=examples,
        batch=batch,
        outputs=out,
        backend_opts={"api_key": "bench"},
    )
    t0 = time.perf_counter()
    result = generate(opts)
    return result, time.perf_counter() - t0


def costs(prompt: int, completion: int, cached: int) -> str:
    from distill.models import call_cost, parse_model, price_of

    parts = []
    for m in MODELS:
        price = price_of(parse_model(m))
        with_cache = call_cost(price, prompt, completion, cached)
        without = call_cost(price, prompt, completion)
        parts.append(f"{m} ${with_cache:.3f} (${without:.3f} uncached)")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--examples", default="3,8,12,16", help="seed chats shown, comma-separated")
    args = ap.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    os.environ.update(DISTILL_POLL_INTERVAL="0.01", DISTILL_POLL_MAX="0.05")
    os.environ["DISTILL_BATCH_GATHER_S"] = "0.2"
    from fake_batch_server import FakeBatchServer
    from fake_openai_server import FakeOpenAIServer, conversation_responder

    out = Path(tempfile.mkdtemp(prefix="distill-bench-batch-"))
    print(
        f"--n {args.n} conversations asked for per configuration (rejected ones are replaced, "
        f"re-asks counted), greenleaf seeds, loopback servers, {out}"
    )
    print(
        "seed chats | prompt tok/request | in a prefix shared with an earlier request | "
        "billed as cached (1,024 floor) | cost of the run's tokens"
    )
    for k in [int(x) for x in args.examples.split(",")]:
        with FakeOpenAIServer(conversation_responder, prompt_cache=True, keep_bodies=False) as s:
            result, wall = run(s.url, args.n, k, False, f"live-{k}", out)
            c = s.prompt_cache
            assert c is not None
        completion = int(result.run.stage("generate")["usage"]["completion_tokens"])
        print(
            f"{k:10d} | {c.prompt_tokens / c.requests:18.0f} | "
            f"{c.shared_tokens / c.prompt_tokens:41.1%} | {c.cached_tokens / c.prompt_tokens:29.1%} | "
            f"{costs(c.prompt_tokens, completion, c.cached_tokens)}  ({c.requests} requests, "
            f"{wall:.0f} s)"
        )

    k = int(args.examples.split(",")[0])
    print(f"\nThe same plan ({args.n} conversations, {k} seed chats) live and with --batch:")
    rows = {}
    for batch in (False, True):
        server_class = FakeBatchServer if batch else FakeOpenAIServer
        with server_class(conversation_responder, prompt_cache=True, keep_bodies=False) as s:
            result, wall = run(s.url, args.n, k, batch, f"{'batch' if batch else 'live'}-plan", out)
            counts = dict(s.counts)
        stage = result.run.stage("generate")
        rows[batch] = stage["cost_usd"]
        extra = (
            f", {counts.get('batches_created', 0)} batch(es), {counts.get('uploads', 0)} upload(s)"
            if batch
            else ""
        )
        print(
            f"  {'batch' if batch else 'live ':5s}: {result.progress.generated} accepted, "
            f"{stage['usage']['calls']} calls, ${stage['cost_usd']:.4f} at gpt-4o-mini prices"
            f"{extra} ({wall:.1f} s)"
        )
    print(f"  batch / live cost: {rows[True] / rows[False]:.3f}")


if __name__ == "__main__":
    main()
