"""The numbers `distill eval` reports, as small pure functions: bootstrap intervals, chrF,
verbatim copying, probe checking, judge scores and the training loss gap."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass
class Estimate:
    """A mean (or rate) over n items with its bootstrap 95% interval."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap(
    values: Sequence[float],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> Estimate:
    """Mean of `values` with a percentile bootstrap interval; same input, same interval.

    For a paired comparison pass the per-item differences (student - base)."""
    x = np.asarray([float(v) for v in values], dtype=float)
    if x.size == 0:
        return Estimate(None, None, None, 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(samples, x.size))
    means = x[idx].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(x.mean()), float(lo), float(hi), int(x.size))


# -- chrF ---------------------------------------------------------------------------------


def _char_ngrams(text: str, n: int) -> Counter[str]:
    s = "".join(text.split())
    return Counter(s[i : i + n] for i in range(len(s) - n + 1))


def chrf(hypothesis: str, reference: str, *, order: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF (Popović 2015, as sacrebleu computes it): character n-grams of orders
    1..6 with whitespace removed, precision and recall averaged over the orders both strings
    have, combined as an F-score weighting recall beta times. 0..100."""
    precision = recall = 0.0
    orders = 0
    for n in range(1, order + 1):
        hyp, ref = _char_ngrams(hypothesis, n), _char_ngrams(reference, n)
        if not hyp or not ref:
            continue
        match = sum((hyp & ref).values())
        precision += match / sum(hyp.values())
        recall += match / sum(ref.values())
        orders += 1
    if orders == 0:
        return 0.0
    p, r = precision / orders, recall / orders
    if p + r == 0:
        return 0.0
    b2 = beta * beta
    return 100.0 * (1 + b2) * p * r / (b2 * p + r)


# -- overfitting --------------------------------------------------------------------------

_WORD = re.compile(r"[\w'’]+")
COPY_NGRAM = 8


def words(text: str) -> list[str]:
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def ngram_index(texts: Iterable[str], n: int = COPY_NGRAM) -> set[tuple[str, ...]]:
    """Every word n-gram of the training replies, for the verbatim-copy check."""
    out: set[tuple[str, ...]] = set()
    for t in texts:
        w = words(t)
        out.update(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    return out


def copied_span(text: str, index: set[tuple[str, ...]], n: int = COPY_NGRAM) -> str | None:
    """The first run of n words this reply shares verbatim with a training reply, or None."""
    w = words(text)
    for i in range(len(w) - n + 1):
        if tuple(w[i : i + n]) in index:
            return " ".join(w[i : i + n])
    return None


def loss_gap(log_path: Path) -> dict[str, Any] | None:
    """Final train and eval loss from a training log.jsonl and their gap (eval - train);
    None when the log has no eval loss after training began. Also the best eval loss, to
    show a rise after it, and the eval loss measured before training (the base's), if any."""
    train_loss: float | None = None
    final: tuple[float, float, float] | None = None
    best: float | None = None
    before: float | None = None
    try:
        lines = log_path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a partial last line from a killed trainer
        if not isinstance(rec, dict):
            continue
        if _finite(rec.get("train_loss")):
            train_loss = float(rec["train_loss"])
        if not _finite(rec.get("eval_loss")):
            continue
        ev = float(rec["eval_loss"])
        if train_loss is None:  # measured before any training step: the base model
            before = ev
            continue
        best = ev if best is None else min(best, ev)
        final = (train_loss, ev, best)
    return _gap(final, before, log_path)


def _gap(
    final: tuple[float, float, float] | None, before: float | None, source: Path
) -> dict[str, Any] | None:
    """The loss-gap record from the last (train, eval, best eval) losses of a log."""
    if final is None:
        return None
    train_loss, eval_loss, best = final
    return {
        "train_loss": train_loss,
        "eval_loss": eval_loss,
        "best_eval_loss": best,
        "gap": eval_loss - train_loss,
        "base_eval_loss": before,
        "log": str(source),
    }


def loss_gap_csv(csv_path: Path) -> dict[str, Any] | None:
    """The same from a hosted fine-tune's result file (OpenAI's step metrics CSV: step,
    train_loss, valid_loss, full_valid_loss, ...); the full validation loss wins when present."""
    import csv

    try:
        rows = list(csv.DictReader(csv_path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None

    def num(row: dict[str, Any], key: str) -> float | None:
        try:
            v = float(row.get(key) or "nan")
        except ValueError:
            return None
        return v if math.isfinite(v) else None

    train_loss: float | None = None
    final: tuple[float, float, float] | None = None
    best: float | None = None
    for row in rows:
        train_loss = num(row, "train_loss") if num(row, "train_loss") is not None else train_loss
        ev = num(row, "full_valid_loss")
        ev = ev if ev is not None else num(row, "valid_loss")
        if ev is None or train_loss is None:
            continue
        best = ev if best is None else min(best, ev)
        final = (train_loss, ev, best)
    return _gap(final, None, csv_path)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# -- forgetting probe ---------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def check_probe(item: dict[str, Any], reply: str) -> bool:
    """Whether a reply answers a probe item: `contains` (case-insensitive substring),
    `regex` (re.search) or `number` (some number in the reply equal to the answer, within a relative `tol` if
    given)."""
    check = item.get("check", "contains")
    answer = str(item["answer"])
    if check == "contains":
        return answer.casefold() in reply.casefold()
    if check == "regex":
        return re.search(answer, reply) is not None
    if check == "number":
        want = float(answer)
        tol = float(item.get("tol", 0.0)) * max(abs(want), 1.0) + 1e-9
        for m in _NUMBER.findall(reply):
            try:
                got = float(m.replace(",", ""))
            except ValueError:
                continue
            if abs(got - want) <= tol:
                return True
        return False
    raise ValueError(f"unknown probe check {check!r}; use contains, regex or number")


# -- judge --------------------------------------------------------------------------------


def student_points(winner: str, student_is: str) -> float:
    """1 when the judge picked the student, 0.5 for a tie, 0 for the base."""
    if winner == "tie":
        return 0.5
    return 1.0 if winner == student_is else 0.0
