"""Benchmark `distill dedupe` against a straightforward datasketch loop.

Generates realistic GreenLeaf support conversations with planted near-duplicates (light
edits: word swaps, punctuation, an added sentence, a changed order number), then measures,
in one process:

- ours: `distill.stages.dedupe.dedupe_file` on the whole corpus (streaming, numpy MinHash,
  banded LSH, exact-Jaccard confirmation): docs/s and peak RSS;
- baseline: one `MinHash()` per document, `update()` per shingle, `MinHashLSH.query` then
  `insert`, candidates kept when the MinHash estimate is >= threshold. It runs on a subsample
  (--baseline-docs) and its docs/s is extrapolated from there;
- precision and recall of both against brute-force exact Jaccard >= threshold on a 5k sample
  (planted groups kept whole so the sample holds real duplicates).

    python benchmarks/dedupe.py --sizes 10k,100k,1M
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill.minhash import example_text, shingle_sets, shingles  # noqa: E402
from distill.stages.dedupe import DedupeConfig, dedupe_file  # noqa: E402

SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."
PLANTS = [
    "monstera", "pothos", "snake plant", "fiddle leaf fig", "calathea", "peace lily",
    "zz plant", "rubber plant", "string of pearls", "bird of paradise", "aloe", "orchid",
    "spider plant", "philodendron", "cactus", "fern", "olive tree", "bonsai",
]  # fmt: skip
NAMES = ["Sam", "Priya", "Jonas", "Amelie", "Tom", "Grace", "Luca", "Ines", "Noah", "Maya"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
CITIES = ["Leeds", "Bristol", "Lyon", "Ghent", "Utrecht", "Porto", "Cork", "Bath", "Graz"]

USER = {
    "late order": [
        "Hi, my order {order} still hasn't arrived and it was due on {day}.",
        "Where is my {plant}? Order {order} was meant to be here by {day}.",
        "I ordered a {plant} ({order}) over a week ago and nothing has shown up in {city}.",
        "Any update on {order}? The tracking hasn't moved since {day}.",
    ],
    "damaged plant": [
        "My {plant} arrived today with snapped stems and half the soil on the floor.",
        "The pot on order {order} came cracked and the {plant} looks crushed.",
        "Hello, the {plant} I got on {day} has brown mushy leaves, is that normal?",
        "Order {order} turned up damaged, the box was soaked and the {plant} is broken.",
    ],
    "watering": [
        "How often should I water my {plant}? The leaves are drooping a bit.",
        "I think I'm overwatering my {plant}, the soil is always wet. What should I do?",
        "Should I water the {plant} from the bottom or the top? I live in a warm flat in {city}.",
        "My {plant} leaves are curling, do I need to water it more in summer?",
    ],
    "refund": [
        "I'd like a refund for order {order}, the {plant} isn't what I expected.",
        "Can I return the {plant} from {order}? It's still in the box.",
        "How long does a refund take? I sent back order {order} on {day}.",
        "I want my money back for {order}, it was the wrong size pot.",
    ],
    "subscription": [
        "Can I pause my plant-care subscription for a month? I'm away from {day}.",
        "Please change my subscription delivery address to my new place in {city}.",
        "How do I cancel the monthly box? My name is {name}.",
        "Can I swap next month's {plant} for something pet friendly?",
    ],
}
FOLLOW = [
    "Thanks, that helps. Can you also tell me when the next delivery slot is?",
    "Great. Do I need to be home to sign for it?",
    "Okay, and will I get an email confirmation?",
    "Lovely, one more thing: can I add a gift note for {name}?",
    "Perfect. Is there anything I should do with the {plant} in the meantime?",
]
OPEN = [
    "Sorry to hear that, {name}!",
    "Thanks for reaching out about your {plant}.",
    "Ah, I'm sorry, that must be frustrating.",
    "Lovely to hear from you, {name}.",
    "No worries at all, let's sort this out.",
    "Thanks for your patience while I looked into it.",
    "Happy {day}! Glad you messaged.",
    "Thanks for letting us know.",
    "Happy to help with that.",
    "Oh no, that's not the welcome your {plant} deserved.",
    "Great question!",
    "Of course, {name}.",
]
MIDDLE = [
    "I've checked {order} and it left our {city} hub on {day}.",
    "Your {plant} likes a bright spot, so try it {cm} cm back from an east window.",
    "I've added a {pct}% discount to your next order as a thank-you.",
    "The courier shows a delivery attempt in {city} on {day}, so it may be at a neighbour's.",
    "Yellow lower leaves usually mean too much water; let the soil dry out for {n} days.",
    "I've sent a prepaid return label to your email; it's valid for {n} days.",
    "Repot your {plant} into a pot about {cm} cm wider with fresh, chunky soil.",
    "Your gift note for {name} is saved and will be printed on a card.",
    "I've moved your delivery to {day} and you'll get a one-hour slot that morning.",
    "I've arranged a free replacement {plant} that ships tomorrow.",
    "Water your {plant} when the top 3 cm of soil feel dry, usually every 7 to 10 days.",
    "I've started a refund for {order}; it reaches your card in 3 to 5 working days.",
    "I've paused your subscription and the next box will go out after {day}.",
    "Move the {plant} to bright, indirect light and keep it away from radiators.",
    "I've updated your address to the new one in {city} for all future boxes.",
    "A courier will collect the parcel on {day} between 9 and 5.",
]
CLOSE = [
    "Just reply here if anything else comes up.",
    "Give it {n} days and tell me how it looks.",
    "Shall I set a reminder for the next watering?",
    "Happy growing, {name}!",
    "Tap the link in the email to pick a new time if {day} doesn't suit.",
    "You'll get an email with the tracking link shortly.",
    "Send us a photo if the leaves keep yellowing and we'll take a look.",
    "Let me know if you'd like me to add a care card to the box.",
    "Please keep the old pot until the courier has been.",
]
EXTRA = [
    "Thank you so much for your patience!",
    "Also, the app keeps logging me out.",
    "By the way, I love your packaging.",
    "PS: it was meant to be a birthday present.",
]


def _fill(rng: random.Random, template: str) -> str:
    return template.format(
        order=f"GL-{rng.randint(10000, 99999)}",
        plant=rng.choice(PLANTS),
        day=rng.choice(DAYS),
        city=rng.choice(CITIES),
        name=rng.choice(NAMES),
        cm=rng.randint(2, 90),
        n=rng.randint(2, 30),
        pct=rng.choice([5, 10, 15, 20, 25]),
    )


def conversation(rng: random.Random) -> list[dict[str, str]]:
    """One support conversation of 1 to 3 turns."""
    topic = rng.choice(list(USER))
    messages = [{"role": "system", "content": SYSTEM}]
    turns = rng.choice([1, 1, 2, 3])
    for t in range(turns):
        user = _fill(rng, rng.choice(USER[topic]) if t == 0 else rng.choice(FOLLOW))
        reply = " ".join(
            _fill(rng, s)
            for s in (rng.choice(OPEN), rng.choice(MIDDLE), rng.choice(MIDDLE), rng.choice(CLOSE))
        )
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return messages


def light_edit(rng: random.Random, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """A near-copy: one or two of word swap, punctuation change, added sentence, new order no."""
    out = [dict(m) for m in messages]
    turns = [m for m in out if m["role"] != "system"]
    for _ in range(rng.choice([1, 1, 2])):
        m = rng.choice(turns)
        words = m["content"].split(" ")
        kind = rng.choice(["swap", "punct", "sentence", "order"])
        if kind == "swap" and len(words) > 3:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
            m["content"] = " ".join(words)
        elif kind == "punct":
            m["content"] = m["content"].replace(".", "!", 1).replace(",", "", 1)
        elif kind == "sentence":
            m["content"] = m["content"] + " " + rng.choice(EXTRA)
        else:
            import re

            m["content"] = re.sub(r"GL-\d{5}", f"GL-{rng.randint(10000, 99999)}", m["content"])
    return out


def iter_corpus(
    n: int, dup_rate: float = 0.1, seed: int = 0, groups: list[list[int]] | None = None
) -> Iterator[dict[str, Any]]:
    """n records {"id","messages","meta"}, streamed; about dup_rate of them are planted
    near-copies of an earlier one, placed up to n/20 (at most 50,000) records later. When `groups` is given,
    the planted groups (lists of record positions) are appended to it."""
    rng = random.Random(seed)
    pending: list[tuple[int, int, int, list[dict[str, str]]]] = []  # (due, tie, group, messages)
    tie = itertools.count()
    made = 0
    while made < n:
        if pending and pending[0][0] <= made:
            _, _, g, messages = heapq.heappop(pending)
        else:
            messages = conversation(rng)
            g = -1
            copies = rng.choice([1, 1, 1, 2, 3])
            if rng.random() < dup_rate / (1.6 * (1 - dup_rate)):  # 1.6 copies on average
                if groups is not None:
                    groups.append([])
                    g = len(groups) - 1
                for _ in range(copies):
                    due = made + rng.randint(1, max(2, min(50_000, n // 20)))
                    heapq.heappush(pending, (due, next(tie), g, light_edit(rng, messages)))
        if groups is not None and g >= 0:
            groups[g].append(made)
        yield {"id": f"ex{made:07d}", "messages": messages, "meta": {}}
        made += 1
    if groups is not None:
        groups[:] = [grp for grp in groups if len(grp) > 1]


def make_corpus(
    n: int, dup_rate: float = 0.1, seed: int = 0
) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """The corpus as a list, with its planted groups."""
    groups: list[list[int]] = []
    records = list(iter_corpus(n, dup_rate, seed, groups))
    return records, groups


def brute_force_pairs(texts: list[str], threshold: float, ngram: int = 5) -> set[tuple[int, int]]:
    """All pairs (i < j) with exact Jaccard >= threshold, by sparse matrix products."""
    from scipy import sparse

    sets = shingle_sets(texts, ngram)
    vocab: dict[int, int] = {}
    rows, cols = [], []
    for i, s in enumerate(sets):
        for h in s.tolist():
            cols.append(vocab.setdefault(h, len(vocab)))
            rows.append(i)
    x = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(len(sets), len(vocab))
    )
    sizes = np.array([len(s) for s in sets])
    out: set[tuple[int, int]] = set()
    step = 500
    for lo in range(0, len(sets), step):
        inter = (x[lo : lo + step] @ x.T).toarray()
        union = sizes[lo : lo + step, None] + sizes[None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            jac = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        ii, jj = np.nonzero(jac >= threshold)
        for i, j in zip((ii + lo).tolist(), jj.tolist(), strict=True):
            if i < j:
                out.add((i, j))
    return out


def straightforward(
    records: list[dict[str, Any]], threshold: float, num_perm: int
) -> set[tuple[int, int]]:
    """The loop most people write first: MinHash per doc, update per shingle, query, insert."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[int, MinHash] = {}
    pairs: set[tuple[int, int]] = set()
    for i, rec in enumerate(records):
        m = MinHash(num_perm=num_perm)
        for sh in shingles(example_text(rec["messages"])):
            m.update(sh.encode("utf-8"))
        for j in lsh.query(m):
            if kept[j].jaccard(m) >= threshold:
                pairs.add((j, i))
        lsh.insert(i, m)
        kept[i] = m
    return pairs


def sample_indices(n: int, groups: list[list[int]], k: int, seed: int = 1) -> list[int]:
    """About k indices: whole planted groups (half the sample) plus random others."""
    rng = random.Random(seed)
    chosen: set[int] = set()
    for g in rng.sample(groups, len(groups)):
        if len(chosen) + len(g) > k // 2:
            break
        chosen.update(g)
    rest = [i for i in rng.sample(range(n), min(n, k * 2)) if i not in chosen]
    chosen.update(rest[: k - len(chosen)])
    return sorted(chosen)


def found_pairs(
    confirmed: list[Any], exact_pairs: list[Any], sample_ids: list[str]
) -> set[tuple[int, int]]:
    """Pairs of sample positions that dedupe judged >= threshold: its confirmed pairs, spread
    over exact copies (an exact copy has the same normalised text, hence the same Jaccard)."""
    rep: dict[str, str] = {}
    for first, later in exact_pairs:
        rep[later] = rep.get(first, first)
    members: dict[str, list[int]] = {}
    for k, i in enumerate(sample_ids):
        members.setdefault(rep.get(i, i), []).append(k)
    found: set[tuple[int, int]] = set()
    for group in members.values():
        found.update((a, b) for a in group for b in group if a < b)
    for x, y, _ in confirmed:
        for a in members.get(rep.get(x, x), []):
            for b in members.get(rep.get(y, y), []):
                found.add((min(a, b), max(a, b)))
    return found


def precision_recall(
    found: set[tuple[int, int]], truth: set[tuple[int, int]]
) -> tuple[float, float]:
    tp = len(found & truth)
    precision = tp / len(found) if found else 1.0
    recall = tp / len(truth) if truth else 1.0
    return precision, recall


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_size(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1], 1)
    return int(float(s.rstrip("km")) * mult)


def child(
    src: Path, out: Path, dump: Path, threshold: float, num_perm: int, workers: int = 0
) -> None:
    """Ours, in a fresh process so its peak RSS is its own."""
    cfg = DedupeConfig(threshold=threshold, num_perm=num_perm, workers=workers)
    t0 = time.perf_counter()
    result = dedupe_file(src, out, cfg)
    seconds = time.perf_counter() - t0
    data = {
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "confirmed": result.confirmed,
        "exact_pairs": result.exact_pairs,
        "removed": result.removed,
        "kept": result.kept,
        "candidate_pairs": result.candidate_pairs,
        "pass_seconds": {k: round(v, 1) for k, v in result.seconds.items()},
    }
    dump.write_text(json.dumps(data))


def run_size(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    groups: list[list[int]] = []
    src = workdir / f"corpus-{n}.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for rec in iter_corpus(n, seed=n, groups=groups):
            f.write(json.dumps(rec) + "\n")
    gen_s = time.perf_counter() - t0
    out, dump = workdir / f"deduped-{n}.jsonl", workdir / f"pairs-{n}.json"
    cmd = [sys.executable, __file__, "--child", str(src), str(out), str(dump)]
    cmd += ["--threshold", str(args.threshold), "--num-perm", str(args.num_perm)]
    cmd += ["--workers", str(args.workers)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall_s = time.perf_counter() - t0
    ours = json.loads(dump.read_text())

    # precision / recall on a sample, against brute force
    idx = sample_indices(n, groups, min(args.sample, n))
    base_n = min(args.baseline_docs, n)
    wanted = set(idx)
    picked: dict[int, dict[str, Any]] = {}
    first: list[dict[str, Any]] = []
    with open(src, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i in wanted:
                picked[i] = json.loads(line)
            if i < base_n:
                first.append(json.loads(line))
    sample_records = [picked[i] for i in idx]
    texts = [example_text(r["messages"]) for r in sample_records]
    truth = brute_force_pairs(texts, args.threshold)
    found = found_pairs(ours["confirmed"], ours["exact_pairs"], [r["id"] for r in sample_records])
    ours_p, ours_r = precision_recall(found, truth)

    t0 = time.perf_counter()
    base_pairs = straightforward(sample_records, args.threshold, args.num_perm)
    base_sample_s = time.perf_counter() - t0
    base_p, base_r = precision_recall(base_pairs, truth)
    if base_n == len(sample_records):
        base_s = base_sample_s
    else:
        t0 = time.perf_counter()
        straightforward(first, args.threshold, args.num_perm)
        base_s = time.perf_counter() - t0
    ours_dps = n / ours["seconds"]
    base_dps = base_n / base_s
    row = {
        "n": n,
        "generate_s": round(gen_s, 1),
        "ours_s": round(ours["seconds"], 1),
        "ours_wall_s_with_start": round(wall_s, 1),
        "ours_docs_per_s": round(ours_dps),
        "baseline_docs": base_n,
        "baseline_docs_per_s": round(base_dps),
        "speedup": round(ours_dps / base_dps, 1),
        "peak_rss_mb": round(ours["peak_rss_mb"]),
        "worker_peak_rss_mb": round(ours["workers_peak_rss_mb"]),
        "sample": len(idx),
        "truth_pairs": len(truth),
        "ours_precision": round(ours_p, 4),
        "ours_recall": round(ours_r, 4),
        "baseline_precision": round(base_p, 4),
        "baseline_recall": round(base_r, 4),
        "candidate_pairs": ours["candidate_pairs"],
        "pass_seconds": ours["pass_seconds"],
        "removed": ours["removed"],
        "kept": ours["kept"],
    }
    src.unlink()
    out.unlink()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes", default="10k,100k", help="comma-separated corpus sizes (10k,100k,1M)"
    )
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--sample", type=int, default=5000, help="brute-force sample size")
    ap.add_argument(
        "--baseline-docs", type=int, default=5000, help="docs the baseline runs on for docs/s"
    )
    ap.add_argument("--workers", type=int, default=0, help="dedupe's --workers (0: auto)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--child", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.threshold, args.num_perm, args.workers)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            row = run_size(parse_size(size), args, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(f"{'n':>9} {'ours docs/s':>12} {'baseline docs/s':>16} {'speedup':>8} {'peak RSS MB':>12} "
          f"{'P ours/base':>13} {'R ours/base':>13}")  # fmt: skip
    for r in rows:
        print(
            f"{r['n']:>9} {r['ours_docs_per_s']:>12} {r['baseline_docs_per_s']:>16} {r['speedup']:>7}x "
            f"{r['peak_rss_mb']:>12} {r['ours_precision']:>6}/{r['baseline_precision']:<6} "
            f"{r['ours_recall']:>6}/{r['baseline_recall']:<6}"
        )
    print("(baseline docs/s measured on the first --baseline-docs documents and extrapolated)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
