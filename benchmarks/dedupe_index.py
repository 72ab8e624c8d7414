"""`distill dedupe --index`: what the shared Redis index costs against the in-memory dedupe,
and whether two concurrent shards keep what one process keeps.

    python benchmarks/dedupe_index.py --n 20000

Starts a redis-server on a free loopback port (no persistence), makes the support corpus of
benchmarks/dedupe.py, and times in one run: the in-memory dedupe of the whole corpus, one
process indexing it, and two processes indexing its two halves at the same time. Prints
docs/s and ratios, the Redis memory used per indexed example, and whether the kept sets match.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _corpus_module():
    spec = importlib.util.spec_from_file_location("bench_dedupe", ROOT / "benchmarks" / "dedupe.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def dedupe(src: Path, out: Path, *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "distill", "dedupe", "--input", str(src), "--output", str(out)]
    return subprocess.Popen([*cmd, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(*procs: subprocess.Popen) -> None:
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            sys.exit(err.decode())


def kept(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.open(encoding="utf-8")]


def shard(report: Path) -> int:
    return json.loads(report.read_text())["parameters"]["index_shard"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not installed (Debian: apt-get install redis-server)")
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    url = f"redis://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            records, _ = _corpus_module().make_corpus(args.n, dup_rate=0.2, seed=1)
            # the halves alternate, so many of the second half's duplicates are in the first
            a, b = records[0::2], records[1::2]
            whole = write(d / "whole.jsonl", a + b)
            half_a, half_b = write(d / "a.jsonl", a), write(d / "b.jsonl", b)

            t0 = time.perf_counter()
            finish(dedupe(whole, d / "mem.jsonl"))
            t_mem = time.perf_counter() - t0

            before = client.info("memory")["used_memory"]
            t0 = time.perf_counter()
            finish(dedupe(whole, d / "one.jsonl", "--index", f"{url}/one"))
            t_one = time.perf_counter() - t0
            per_example = (client.info("memory")["used_memory"] - before) / len(records)
            one_is_mem = kept(d / "one.jsonl") == kept(d / "mem.jsonl")
            n_kept = len(kept(d / "one.jsonl"))

            t0 = time.perf_counter()
            pa = dedupe(half_a, d / "a.out.jsonl", "--index", f"{url}/two")
            pb = dedupe(half_b, d / "b.out.jsonl", "--index", f"{url}/two")
            finish(pa, pb)
            t_two = time.perf_counter() - t0

            # the shards' order is the order they registered in; one process over that order
            outs = sorted(["a", "b"], key=lambda h: shard(d / f"{h}.out.dedupe_report.json"))
            together = kept(d / f"{outs[0]}.out.jsonl") + kept(d / f"{outs[1]}.out.jsonl")
            if outs != ["a", "b"]:
                write(whole, b + a)
                finish(dedupe(whole, d / "one.jsonl", "--index", f"{url}/one-ba"))
            n = len(records)
            print(f"{n} examples, {n_kept} kept")
            print(f"in memory:                  {n / t_mem:8.0f} docs/s")
            print(
                f"index, one process:         {n / t_one:8.0f} docs/s  "
                f"({t_mem / t_one:.2f}x in-memory)"
            )
            print(
                f"index, two shards at once:  {n / t_two:8.0f} docs/s  "
                f"({t_mem / t_two:.2f}x in-memory, {t_one / t_two:.2f}x one process)"
            )
            print(f"Redis memory per indexed example: {per_example:.0f} bytes")
            print(f"two shards keep what one process keeps: {together == kept(d / 'one.jsonl')}")
            print(f"index (one process) keeps what in-memory keeps: {one_is_mem}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
