"""Where the student is weak: the held-out examples grouped by plan cell (one value of one plan
axis: a topic, a persona, an intent, a turn count), each with how often the student failed the
style spec there and how many training examples the cell already holds, ranked for
`distill improve`."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from distill.evaluation.scoring import AXES
from distill.runs import Run, read_jsonl
from distill.stages.metrics import bootstrap

# pseudo-examples at the overall failure rate added to every cell: one held-out failure in a
# cell of one is a weaker sign than five in five
PRIOR = 1.0


@dataclass(frozen=True)
class Cell:
    axis: str
    value: str
    held_out: int  # held-out examples in the cell (student and base both answered)
    failed: int  # of those, student replies that break the style spec
    train: int  # training examples already in the cell
    priority: float  # smoothed failure rate x how thin training is there (see rank_cells)
    pass_rate: dict[str, Any]  # the student's style pass rate with its 95% interval

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def held_out_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """results.jsonl's held-out rows where the student's style was scored."""
    return [
        r
        for r in results
        if r.get("kind") == "example" and isinstance(r.get("student", {}).get("style_pass"), bool)
    ]


def value_of(meta: dict[str, Any], axis: str) -> str | None:
    value = meta.get(axis) if isinstance(meta, dict) else None
    return None if value in (None, "") else str(value)


def train_counts(run: Run) -> dict[str, Counter[str]]:
    """Training examples per value of each axis, from train_ids.jsonl (split writes it)."""
    counts: dict[str, Counter[str]] = {axis: Counter() for axis in AXES}
    path = run.file("train_ids.jsonl")
    if path.exists():
        for row in read_jsonl(path):
            for axis in AXES:
                if (v := value_of(row.get("meta") or {}, axis)) is not None:
                    counts[axis][v] += 1
    return counts


def axes_with_cells(rows: list[dict[str, Any]]) -> list[str]:
    """The axes on which the held-out examples take at least two values."""
    return [a for a in AXES if len({value_of(r.get("meta") or {}, a) for r in rows} - {None}) > 1]


def rank_cells(rows: list[dict[str, Any]], train: Counter[str], axis: str) -> list[Cell]:
    """Cells of `axis`, weakest first. priority = (failed + PRIOR x overall failure rate) /
    (held_out + PRIOR) x ((mean train per cell + 1) / (train in the cell + 1)) ** 0.25: the
    student's smoothed failure rate there, raised a little where training holds fewer examples
    than the average cell and lowered where it holds more (the failures decide; 16x fewer
    training examples count as twice the failure rate)."""
    groups: dict[str, list[bool]] = {}
    for r in rows:
        if (v := value_of(r.get("meta") or {}, axis)) is not None:
            groups.setdefault(v, []).append(bool(r["student"]["style_pass"]))
    if not groups:
        return []
    total = sum(len(g) for g in groups.values())
    overall = sum(1 for g in groups.values() for ok in g if not ok) / total
    mean_train = sum(train.get(v, 0) for v in groups) / len(groups)
    cells = []
    for value, passes in groups.items():
        failed = sum(1 for ok in passes if not ok)
        smoothed = (failed + PRIOR * overall) / (len(passes) + PRIOR)
        thin = ((mean_train + 1) / (train.get(value, 0) + 1)) ** 0.25
        cells.append(
            Cell(
                axis=axis,
                value=value,
                held_out=len(passes),
                failed=failed,
                train=train.get(value, 0),
                priority=round(smoothed * thin, 6),
                pass_rate=bootstrap([float(ok) for ok in passes]).to_dict(),
            )
        )
    return sorted(cells, key=lambda c: (-c.priority, -c.failed, c.train, c.value))
