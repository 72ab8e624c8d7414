"""`distill validate` vs the OpenAI cookbook's validation loop on the same large chat JSONL file.

    python benchmarks/validate.py               # 1,000,000 lines (~730 MB in a temp dir)
    python benchmarks/validate.py --lines 100000

Both run as subprocesses in this one run; peak RSS comes from os.wait4 for each child. The
baseline is a straight reimplementation of the cookbook's "Data preparation and analysis for
chat model fine-tuning" loop (json.loads every line into a list, format checks, then tokens per
message with the same o200k tokenizer), so the token totals of both must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."
WORDS = (
    "order parcel tracking late lost damaged plant monstera fern cactus pothos ficus orchid "
    "snake fiddle leaf pot ceramic soil compost repot water light window bright indirect shade "
    "yellow brown drooping pests gnats refund return label replacement subscription pause box "
    "gift note birthday discount code checkout address account courier depot Tuesday Friday "
    "tomorrow week sorry thanks please could would you I we it my your the a an and but so if "
    "when is was will can just today arrived broken wrong size small large every days weeks "
    "winter summer humidity mist drainage roots bloom flowers repotting fertiliser feed spray"
).split()


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    words = rng.choices(WORDS, k=rng.randint(lo, hi))
    if rng.random() < 0.3:
        words.append(f"GL-{rng.randint(10000, 99999)}")
    return " ".join(words).capitalize() + rng.choice(".!?")


def make_file(path: Path, lines: int, seed: int = 0) -> int:
    """A valid chat JSONL file of `lines` varied 2- or 4-turn conversations; returns its size."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        buf = []
        for _ in range(lines):
            msgs = [{"role": "system", "content": SYSTEM}]
            for _turn in range(rng.choice((1, 2))):
                msgs.append({"role": "user", "content": _sentence(rng, 12, 40)})
                msgs.append(
                    {
                        "role": "assistant",
                        "content": _sentence(rng, 10, 30) + " " + _sentence(rng, 5, 15),
                    }
                )
            buf.append(json.dumps({"messages": msgs}))
            if len(buf) >= 10_000:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")
    return path.stat().st_size


def cookbook(path: str) -> None:
    """The cookbook's loop, as written there, with quicktok's o200k in place of tiktoken."""
    from collections import defaultdict

    import numpy as np
    import quicktok

    encoding = quicktok.get_encoding("o200k_base")
    with open(path, encoding="utf-8") as f:
        dataset = [json.loads(line) for line in f]

    format_errors: dict[str, int] = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(
                k not in ("role", "content", "name", "function_call", "weight") for k in message
            ):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1

    def num_tokens_from_messages(messages, tokens_per_message=3, tokens_per_name=1):
        num_tokens = 0
        for message in messages:
            num_tokens += tokens_per_message
            for key, value in message.items():
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += tokens_per_name
        num_tokens += 3
        return num_tokens

    def num_assistant_tokens_from_messages(messages):
        num_tokens = 0
        for message in messages:
            if message["role"] == "assistant":
                num_tokens += len(encoding.encode(message["content"]))
        return num_tokens

    n_missing_system = n_missing_user = 0
    n_messages, convo_lens, assistant_message_lens = [], [], []
    for ex in dataset:
        messages = ex["messages"]
        if not any(message["role"] == "system" for message in messages):
            n_missing_system += 1
        if not any(message["role"] == "user" for message in messages):
            n_missing_user += 1
        n_messages.append(len(messages))
        convo_lens.append(num_tokens_from_messages(messages))
        assistant_message_lens.append(num_assistant_tokens_from_messages(messages))
    stats = {}
    for name, values in (
        ("messages", n_messages),
        ("tokens", convo_lens),
        ("assistant", assistant_message_lens),
    ):
        stats[name] = [
            float(np.min(values)),
            float(np.mean(values)),
            float(np.quantile(values, 0.95)),
            float(np.max(values)),
        ]
    n_too_long = sum(n > 16385 for n in convo_lens)
    n_train = len(dataset)
    n_epochs = 3
    if n_train * n_epochs < 100:
        n_epochs = min(25, -(-100 // n_train))
    elif n_train * n_epochs > 25000:
        n_epochs = max(1, 25000 // n_train)
    billed = sum(min(16385, n) for n in convo_lens)
    print(
        json.dumps(
            {
                "errors": dict(format_errors),
                "total_tokens": sum(convo_lens),
                "too_long": n_too_long,
                "epochs": n_epochs,
                "billed": billed * n_epochs,
                "stats": stats,
            }
        )
    )


def measure(cmd: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, peak RSS in MiB, stdout) of one child process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        out.seek(0)
        text = out.read().decode()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}): {err[-2000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, default=None, help="write the file here and keep it")
    ap.add_argument("--reuse", action="store_true", help="with --keep: reuse the file if it exists")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--cookbook", help=argparse.SUPPRESS)  # internal: run the baseline on FILE
    args = ap.parse_args()
    if args.cookbook:
        cookbook(args.cookbook)
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "chat.jsonl"
        t = time.perf_counter()
        if args.reuse and path.exists():
            size = path.stat().st_size
            with open(path, "rb") as f:
                args.lines = sum(1 for _ in f)
        else:
            size = make_file(path, args.lines)
        took = time.perf_counter() - t
        print(f"file: {args.lines:,} lines, {size / 2**20:,.0f} MiB (ready in {took:.0f} s)")

        ours_s, ours_cpu, ours_rss, ours_out = measure(
            [sys.executable, "-m", "distill", "validate", str(path), "--format", "json"]
        )
        report = json.loads(ours_out)
        ours_tokens = report["stats"]["tokens_per_example"]["total"]
        print(
            f"distill validate: {ours_s:7.1f} s  {args.lines / ours_s:>10,.0f} lines/s  "
            f"CPU {ours_cpu:6.1f} s  peak RSS {ours_rss:6.0f} MiB  valid={report['valid']} tokens={ours_tokens:,}"
        )
        if args.skip_baseline:
            return
        base_s, base_cpu, base_rss, base_out = measure(
            [sys.executable, __file__, "--cookbook", str(path)]
        )
        base = json.loads(base_out)
        print(
            f"cookbook loop:    {base_s:7.1f} s  {args.lines / base_s:>10,.0f} lines/s  "
            f"CPU {base_cpu:6.1f} s  peak RSS {base_rss:6.0f} MiB  tokens={base['total_tokens']:,}"
        )
        same = "yes" if base["total_tokens"] == ours_tokens else "NO"
        print(
            f"speed ratio (ours / cookbook): {base_s / ours_s:.2f}x wall, "
            f"{base_cpu / ours_cpu:.2f}x CPU   "
            f"RSS ratio: {ours_rss / base_rss:.2f}   token totals agree: {same}"
        )


if __name__ == "__main__":
    main()
