"""Before vs after an improve round (and vs its control), on the same held-out examples: the
style pass rate per plan cell, the gain in the targeted cells next to the gain elsewhere, and
whether targeting beat adding as many examples uniformly."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from distill.evaluation.scoring import AXES
from distill.evaluation.verdict import estimate_text
from distill.runs import read_jsonl
from distill.stages.improve.cells import held_out_rows, value_of
from distill.stages.metrics import bootstrap


def _passes(path: Path) -> dict[str, tuple[bool, dict[str, Any]]]:
    """id -> (student passes the style spec, plan meta) for one eval's held-out rows."""
    if not path.exists():
        return {}
    return {
        str(r["id"]): (bool(r["student"]["style_pass"]), r.get("meta") or {})
        for r in held_out_rows(list(read_jsonl(path)))
        if r.get("id") is not None
    }


def _rate(values: list[bool]) -> dict[str, Any]:
    return bootstrap([float(v) for v in values]).to_dict()


def _gain(a: dict[str, tuple[bool, Any]], b: dict[str, tuple[bool, Any]], ids: list[str]):
    """b - a, paired over `ids` (both answered), with its interval."""
    return bootstrap([float(b[i][0]) - float(a[i][0]) for i in ids if i in a and i in b]).to_dict()


def _added_per_cell(path: Path, axis: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    if path.exists():
        for rec in read_jsonl(path):
            if (v := value_of(rec.get("meta") or {}, axis)) is not None:
                counts[v] += 1
    return counts


def round_report(folder: Path, state: dict[str, Any], axis: str) -> dict[str, Any]:
    before = _passes(folder / "before" / "results.jsonl")
    after = _passes(folder / "after" / "results.jsonl")
    control = _passes(folder / "control" / "results.jsonl")
    ids = [i for i in before if i in after]
    targets = set(state["targets"])
    in_target = [i for i in ids if value_of(before[i][1], axis) in targets]
    elsewhere = [i for i in ids if i not in set(in_target)]
    added = _added_per_cell(folder / "targeted" / "added.jsonl", axis)
    added_control = _added_per_cell(folder / "control" / "added.jsonl", axis)
    trained = {c["value"]: c["train"] for c in state["cells"] if c["axis"] == axis}

    by_axis: dict[str, list[dict[str, Any]]] = {}
    for ax in AXES:
        groups: dict[str, list[str]] = {}
        for i in ids:
            if (v := value_of(before[i][1], ax)) is not None:
                groups.setdefault(v, []).append(i)
        if len(groups) < 2:
            continue
        rows = []
        for value, members in groups.items():
            row: dict[str, Any] = {
                "value": value,
                "n": len(members),
                "targeted": ax == axis and value in targets,
                "before": _rate([before[i][0] for i in members]),
                "after": _rate([after[i][0] for i in members]),
                "gain": _gain(before, after, members),
            }
            if ax == axis:
                row["train_before"] = trained.get(value, 0)
                row["added"] = added.get(value, 0)
                if control:
                    row["added_control"] = added_control.get(value, 0)
            if control:
                row["control"] = _rate([control[i][0] for i in members if i in control])
                row["control_gain"] = _gain(before, control, members)
            rows.append(row)
        by_axis[ax] = sorted(rows, key=lambda r: (not r["targeted"], r["before"]["mean"] or 0))

    attribution: dict[str, Any] = {
        "targeted_cells": {
            "n": len(in_target),
            "gain": _gain(before, after, in_target),
        },
        "elsewhere": {"n": len(elsewhere), "gain": _gain(before, after, elsewhere)},
        "overall": {"n": len(ids), "gain": _gain(before, after, ids)},
    }
    if control:
        for key, members in (
            ("targeted_cells", in_target),
            ("elsewhere", elsewhere),
            ("overall", ids),
        ):
            attribution[key]["control_gain"] = _gain(before, control, members)
            attribution[key]["round_minus_control"] = _gain(control, after, members)
    return {
        "round": state["round"],
        "folder": str(folder),
        "axis": axis,
        "targets": state["targets"],
        "generated": state["generated"],
        "added": state["added"],
        "added_control": sum(added_control.values()) if control else None,
        "held_out": len(ids),
        "cells": by_axis,
        "attribution": attribution,
        "headline": headline(attribution, len(in_target), bool(control)),
    }


def headline(att: dict[str, Any], n_target: int, has_control: bool) -> str:
    """One line: what the round changed where it aimed, and whether aiming beat uniform."""
    t = att["targeted_cells"]
    text = (
        f"targeted cells ({n_target} held-out): style pass {pts(t['gain'])}; elsewhere "
        f"({att['elsewhere']['n']}): {pts(att['elsewhere']['gain'])}"
    )
    if not has_control:
        return text + "; pass --control to compare with adding as many examples uniformly"
    d = t["round_minus_control"]
    text += f"; uniform control in the targeted cells: {pts(t['control_gain'])}"
    if d["mean"] is None:
        return text
    if d["lo"] is not None and d["lo"] > 0:
        verdict = "targeting beat adding data uniformly"
    elif d["hi"] is not None and d["hi"] < 0:
        verdict = "adding data uniformly did better than targeting"
    else:
        verdict = "targeting and uniform cannot be told apart on these held-out examples"
    return f"{text}; round - control {pts(d)}: {verdict}"


def pts(estimate: dict[str, Any]) -> str:
    if estimate.get("mean") is None:
        return "n/a"
    return estimate_text(estimate, True, diff=True)
