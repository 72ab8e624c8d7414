"""Hold out an eval split that shares no near-duplicate with training.

An eval set that holds near-copies of training examples measures memory, not skill. So the
examples are first grouped: any two with Jaccard >= 0.5 (character 5-gram shingles, as in
dedupe) join one group by union-find, and a group goes to train or eval whole. Groups are
drawn per topic (stratified) in an order given by hashing their ids with the seed (hashlib,
so the same seed gives the same split on any machine). Seeds always stay in train.

A leakage check then looks again with independent MinHash permutations: for each eval
example, its highest Jaccard to any training example. Should it find a pair above 0.5 that
the grouping missed (chance ~1e-5 per pair), the two groups are merged and the split redone.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distill.errors import DistillError, InputError, UsageError
from distill.minhash import (
    UnionFind,
    band_keys,
    candidate_pairs,
    estimate_jaccard,
    example_text,
    recall_params,
    shingle_sets,
    signatures,
)
from distill.progress import progress
from distill.rejections import drop_stage_rejections
from distill.runs import Run, atomic_write_json, atomic_write_jsonl, read_jsonl

STAGE = "split"
OPENAI_MIN = 10  # OpenAI fine-tuning needs at least 10 examples per file
NO_TOPIC = "(no topic)"


@dataclass(frozen=True)
class SplitConfig:
    """Knobs of `distill split`; `eval_size` is a fraction (0.1) or a count (50)."""

    eval_size: float | int = 0.1
    seed: int = 0
    # with a fractional eval_size, hold out at least this many when a third of the examples
    # that may be held out (not seeds) allows: fewer cannot show whether training worked
    min_eval: int = 0
    group_threshold: float = 0.5  # a pair this similar never straddles train and eval
    num_perm: int = 256
    ngram: int = 5
    # candidates whose (8-bit) MinHash estimate is below this are not compared exactly: a
    # pair at Jaccard 0.5 estimates below 0.35 with chance ~1e-6 at 256 permutations (and
    # the leakage check, with independent permutations, would have to miss it too)
    estimate_floor: float = 0.35


MIN_EVAL = 20  # eval's MIN_EVAL_EXAMPLES: fewer held-out examples cannot show a result


def split_config(eval_size: str | None, seed: int) -> SplitConfig:
    """The config for `--eval-size` as given (None: 10%, but at least MIN_EVAL when a third of
    the generated examples allows; a size the user gives is kept as given)."""
    return SplitConfig(
        eval_size=parse_eval_size(eval_size),
        seed=seed,
        min_eval=MIN_EVAL if eval_size is None else 0,
    )


def parse_eval_size(value: str | float | int | None) -> float | int:
    """'0.1' -> a fraction, '50' -> a count; anything else is a UsageError."""
    if value is None:
        return 0.1
    if isinstance(value, bool):
        raise UsageError(f"--eval-size {value}: expected a fraction like 0.1 or a count like 50")
    if isinstance(value, int):
        n: float | int = value
    elif isinstance(value, float):
        n = value
    else:
        text = str(value).strip()
        try:
            n = int(text)
        except ValueError:
            try:
                n = float(text)
            except ValueError:
                raise UsageError(
                    f"--eval-size {value}: expected a fraction like 0.1 or a count like 50"
                ) from None
    if isinstance(n, float) and not 0.0 < n < 1.0:
        raise UsageError(f"--eval-size {value}: a fraction must be between 0 and 1 (exclusive)")
    if isinstance(n, int) and n < 1:
        raise UsageError(f"--eval-size {value}: a count must be at least 1")
    return n


@dataclass
class SplitResult:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    report: dict[str, Any]
    review_rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _order_key(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def similar_pairs(
    sets: list[frozenset[int]],
    sigs: np.ndarray,
    threshold: float,
    floor: float,
    side: np.ndarray | None = None,
) -> list[tuple[int, int, float]]:
    """(i, j, exact Jaccard) for every pair at >= floor among LSH candidates; the LSH is
    tuned to miss a pair at `threshold` with chance <= 1e-4 (far less above it). With `side`,
    only pairs whose sides differ are compared."""
    if len(sets) < 2:
        return []
    params = recall_params(threshold, sigs.shape[0])
    low = np.ascontiguousarray((sigs & np.uint32(0xFF)).astype(np.uint8).T)

    def close(pairs: np.ndarray) -> np.ndarray:
        keep = estimate_jaccard(low, pairs) >= floor
        if side is not None:
            keep &= side[pairs[:, 0]] != side[pairs[:, 1]]
        return keep

    out: list[tuple[int, int, float]] = []
    pairs = candidate_pairs(band_keys(sigs, params.bands, params.rows), close).tolist()
    # the exact comparisons are split's longest step on big data (~half of it at 30k examples)
    with progress("split: comparing near-duplicate candidates", len(pairs)) as meter:
        for i, j in meter.each(pairs):
            a, b = sets[i], sets[j]
            inter = len(a & b)
            union = len(a) + len(b) - inter
            jac = inter / union if union else 1.0
            if jac >= floor:
                out.append((i, j, jac))
    return out


def split_examples(records: list[dict[str, Any]], config: SplitConfig) -> SplitResult:
    """Split records ({"id","messages","meta"}) into train and eval; see the module docstring."""
    n = len(records)
    if n < 2:
        raise InputError(f"{n} example(s) to split; need at least 2 (one train, one eval)")
    target = (
        max(1, round(config.eval_size * n))
        if isinstance(config.eval_size, float)
        else config.eval_size
    )
    if isinstance(config.eval_size, float) and config.min_eval:
        eligible = sum(1 for r in records if not _is_seed(r))
        target = max(target, min(config.min_eval, eligible // 3))
    if target >= n:
        raise UsageError(
            f"--eval-size {config.eval_size}: asks for {target} eval examples out of {n}; "
            "leave at least one for training"
        )
    texts = [example_text(r["messages"]) for r in records]
    sets = [frozenset(s.tolist()) for s in shingle_sets(texts, config.ngram)]
    sigs = signatures(texts, config.num_perm, 1, config.ngram)

    uf = UnionFind(n)
    t = config.group_threshold
    group_pairs = [p for p in similar_pairs(sets, sigs, t, config.estimate_floor) if p[2] >= t]
    for i, j, _ in group_pairs:
        uf.union(i, j)

    check_sigs = signatures(texts, config.num_perm, 2, config.ngram)  # independent permutations
    rounds = 0
    while True:
        rounds += 1
        in_eval, strata = _assign(records, uf, target, config.seed)
        leaks = similar_pairs(sets, check_sigs, t, config.estimate_floor, side=in_eval)
        above = [(i, j, jac) for i, j, jac in leaks if jac >= t]
        if not above or rounds >= 5:
            break
        for i, j, _ in above:  # the grouping missed these: keep them together and redo
            uf.union(i, j)

    best: dict[int, tuple[float, int]] = {}
    for i, j, jac in leaks:
        e, t = (i, j) if in_eval[i] else (j, i)
        if jac > best.get(e, (-1.0, -1))[0]:
            best[e] = (jac, t)
    train = [r for r, e in zip(records, in_eval, strict=True) if not e]
    held = [r for r, e in zip(records, in_eval, strict=True) if e]
    groups = uf.groups()
    warnings = [
        f"{name} has {count} example(s); OpenAI fine-tuning needs at least {OPENAI_MIN}"
        for name, count in (("train", len(train)), ("eval", len(held)))
        if count < OPENAI_MIN
    ]
    if seeds_out := sum(1 for r in held if _is_seed(r)):
        warnings.append(
            f"{seeds_out} seed example(s) held out for eval: too few generated examples "
            "survived (generate more, or use a stronger teacher)"
        )
    leak_count = sum(1 for jac, _ in best.values() if jac >= config.group_threshold)
    report = {
        "parameters": {
            "eval_size": config.eval_size,
            "seed": config.seed,
            "group_threshold": config.group_threshold,
            "num_perm": config.num_perm,
            "shingle": f"character {config.ngram}-grams of normalised user+assistant turns",
            "order": (
                "groups drawn per topic by sha256(seed:first id); seeds stay in train unless "
                "too few generated examples survived to fill the eval split"
            ),
        },
        "counts": {
            "input": n,
            "train": len(train),
            "eval": len(held),
            "eval_target": target,
            "seeds_held_out": sum(1 for r in held if _is_seed(r)),
            "groups": len(groups),
            "groups_with_several_examples": sum(1 for g in groups.values() if len(g) > 1),
            "similar_pairs": len(group_pairs),
        },
        "strata": strata,
        "leakage": {
            "threshold": config.group_threshold,
            "count_above_threshold": leak_count,
            "method": (
                "MinHash LSH candidates with permutations independent of the grouping's, "
                f"then exact Jaccard; similarities below {config.estimate_floor} are not "
                "listed (null)"
            ),
            "rounds": rounds,
            "max_jaccard_to_train": {
                records[e]["id"]: (round(best[e][0], 4) if e in best else None)
                for e in np.nonzero(in_eval)[0].tolist()
            },
            "nearest_train": {records[e]["id"]: records[t]["id"] for e, (_, t) in best.items()},
        },
        "train_ids": [r["id"] for r in train],
        "eval_ids": [r["id"] for r in held],
        "warnings": warnings,
    }
    return SplitResult(train, held, report, warnings=warnings)


def _assign(
    records: list[dict[str, Any]], uf: UnionFind, target: int, seed: int
) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """A boolean eval mask: whole groups, per-topic quotas by largest remainder."""
    n = len(records)
    groups = uf.groups()
    topics = [_topic(r) for r in records]
    totals = Counter(topics)
    # quotas follow the topics of the examples that may be held out (seeds always train)
    eligible = Counter(t for t, r in zip(topics, records, strict=True) if not _is_seed(r))
    n_eligible = sum(eligible.values()) or 1
    wanted, target = target, min(target, sum(eligible.values()))
    exact = {t: target * eligible.get(t, 0) / n_eligible for t in totals}
    quota = {t: int(q) for t, q in exact.items()}
    for t in sorted(exact, key=lambda t: (-(exact[t] - quota[t]), t))[
        : target - sum(quota.values())
    ]:
        quota[t] += 1
    by_topic: dict[str, list[list[int]]] = {}
    for members in groups.values():
        if any(_is_seed(records[m]) for m in members):
            continue  # seeds (and what is close to them) train
        topic = Counter(topics[m] for m in members).most_common(1)[0][0]
        by_topic.setdefault(topic, []).append(members)
    in_eval = np.zeros(n, dtype=bool)
    seed_groups = [g for g in groups.values() if any(_is_seed(records[m]) for m in g)]
    for topic, topic_groups in by_topic.items():
        room = quota.get(topic, 0)
        ordered = sorted(
            topic_groups, key=lambda g: _order_key(seed, min(records[m]["id"] for m in g))
        )
        for members in ordered:
            if len(members) <= room:
                in_eval[members] = True
                room -= len(members)
            if room == 0:
                break
    # No generated example could be held out (a weak teacher): hold out whole seed groups
    # rather than leave nothing to evaluate on. With a real teacher this never triggers.
    short = wanted - int(in_eval.sum())
    if short > 0 and not in_eval.any():
        for members in sorted(
            seed_groups, key=lambda g: _order_key(seed, min(records[m]["id"] for m in g))
        ):
            if len(members) <= short and n - int(in_eval.sum()) - len(members) >= 1:
                in_eval[members] = True
                short -= len(members)
            if short == 0:
                break
    strata = {
        t: {
            "total": totals[t],
            "eval": int(sum(in_eval[i] for i in range(n) if topics[i] == t)),
            "eval_quota": quota[t],
        }
        for t in sorted(totals)
    }
    return in_eval, strata


def _topic(record: dict[str, Any]) -> str:
    meta = record.get("meta")
    topic = meta.get("topic") if isinstance(meta, dict) else None
    return str(topic) if topic else NO_TOPIC


def _is_seed(record: dict[str, Any]) -> bool:
    meta = record.get("meta")
    return isinstance(meta, dict) and meta.get("source") == "seed"


def _load(run: Run) -> list[dict[str, Any]]:
    path = run.require("deduped.jsonl", "run `distill dedupe` first")
    out = []
    for n, rec in enumerate(read_jsonl(path), 1):
        if not isinstance(rec.get("messages"), list) or not isinstance(rec.get("id"), str):
            raise InputError(
                f"{path}: record {n} has no id or messages list; rerun `distill dedupe`"
            )
        out.append(rec)
    return out


def _improvements(run: Run) -> list[dict[str, Any]]:
    path = run.file("improve.jsonl")
    return list(read_jsonl(path)) if path.exists() else []


def split_run(run: Run, config: SplitConfig) -> SplitResult:
    """deduped.jsonl (+ review.jsonl decisions) -> train.jsonl, eval.jsonl, split_report.json."""
    from distill.stages.review import apply_decisions, load_decisions

    records = _load(run)
    decisions = load_decisions(run)
    kept, dropped = apply_decisions(records, decisions) if decisions else (records, [])
    edited = sum(1 for r in kept if r.get("meta", {}).get("review") == "edit")
    run.record_stage(STAGE, "running")
    try:
        result = split_examples(kept, config)
    except DistillError as e:
        run.record_stage(STAGE, "failed", error=str(e))
        raise
    # what `distill improve` added goes to train only, so the held-out set stays the one
    # split draws from deduped.jsonl
    added, added_dropped = apply_decisions(_improvements(run), decisions)
    result.train.extend(added)
    dropped += added_dropped
    result.review_rejected = dropped
    report = result.report
    report["counts"] = {
        "deduped": len(records),
        "review_rejected": len(dropped),
        "review_edited": edited,
        **report["counts"],
    }
    if added:
        report["counts"]["train"] += len(added)
        report["counts"]["improve"] = len(added)
    drop_stage_rejections(run, "review", "rejected in review")
    run.reject((rec, "review", reason) for rec, reason in dropped)
    _write(run, "train", result.train)
    _write(run, "eval", result.eval)
    atomic_write_json(run.file("split_report.json"), report)
    run.record_stage(
        STAGE,
        "done",
        input=len(records),
        review_rejected=len(dropped),
        review_edited=edited,
        train=len(result.train),
        eval=len(result.eval),
        leakage=report["leakage"]["count_above_threshold"],
        seed=config.seed,
        eval_size=config.eval_size,
    )
    return result


def _write(run: Run, name: str, records: Iterable[dict[str, Any]]) -> None:
    records = list(records)
    atomic_write_jsonl(
        run.file(f"{name}_ids.jsonl"), ({"id": r["id"], "meta": r.get("meta", {})} for r in records)
    )
    atomic_write_jsonl(run.file(f"{name}.jsonl"), ({"messages": r["messages"]} for r in records))
