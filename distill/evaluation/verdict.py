"""The report's first lines: did distillation work (the headline) and the detail."""

from __future__ import annotations

from typing import Any

from distill.stages.metrics import Estimate
from distill.stages.split import MIN_EVAL

# Below this many held-out examples a style difference cannot be told from noise: the verdict
# says so instead of claiming a result (split holds out this many by default when it can)
MIN_EVAL_EXAMPLES = MIN_EVAL


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _pts(e: dict[str, Any]) -> str:
    return f"{100 * e['mean']:+.0f} pts, CI {100 * e['lo']:+.0f}..{100 * e['hi']:+.0f}"


def verdict_line(report: dict[str, Any]) -> str:
    """One line a user can act on: style gain, judge preference, forgetting, copying."""
    m = report["metrics"]
    parts = []
    st = m.get("style", {})
    if "skipped" not in st and st["student"]["mean"] is not None:
        parts.append(
            f"student passes style {_pct(st['student']['mean'])} vs base "
            f"{_pct(st['base']['mean'])} ({_pts(st['diff'])})"
        )
    wr = m.get("win_rate", {})
    if "skipped" not in wr and wr["student"]["mean"] is not None:
        e = wr["student"]
        parts.append(
            f"judge prefers student {_pct(e['mean'])} (CI {_pct(e['lo'])}..{_pct(e['hi'])})"
        )
    pr = m.get("probe", {})
    drop = pr.get("drop", {})
    if drop.get("mean") is not None:
        probe = f"probe {_pct(pr['student']['mean'])} vs base {_pct(pr['base']['mean'])}"
        if drop["lo"] > 0:
            parts.append(f"forgetting: {probe} (drop {_pts(drop)})")
        elif drop["hi"] - drop["lo"] <= 0.10:  # a +-5-point interval that includes 0
            parts.append(f"no forgetting detected ({probe}, drop {_pts(drop)})")
        elif drop["mean"] > 0:
            parts.append(f"{probe} (drop {_pts(drop)}, not conclusive: too few probe items)")
        else:
            parts.append(f"no forgetting detected ({probe})")
    cp = m.get("copying", {})
    if "skipped" not in cp and (cp["student"]["mean"] or 0) > 0:
        parts.append(f"{_pct(cp['student']['mean'])} of student replies copy training text")
    lg = m.get("loss", {})
    if "gap" in lg and lg["eval_loss"] > lg["best_eval_loss"] + 1e-9:
        parts.append("eval loss rose after its best epoch")
    return "; ".join(parts) or "no metric could be computed; see report.json"


def headline(report: dict[str, Any]) -> dict[str, str]:
    """The report's first line: did distillation work, and when it cannot tell, why and what
    to do. `outcome` is worked, worked-with-forgetting, did-not-work or cannot-tell."""
    m, n = report["metrics"], report["examples"]
    if n < MIN_EVAL_EXAMPLES:
        return _said(
            "cannot-tell",
            f"{n} held-out example{'s' if n != 1 else ''}: too few to conclude (at least "
            f"{MIN_EVAL_EXAMPLES} needed); hold out more with `distill split --eval-size "
            f"{max(MIN_EVAL_EXAMPLES + 10, 30)}` (and generate more if train gets too small)",
        )
    for key, what in (
        ("style", "passes the style spec"),
        ("win_rate", "is preferred by the judge"),
    ):
        sec = m.get(key, {})
        if "skipped" in sec:
            continue
        d = sec.get("diff") if key == "style" else _centred(sec.get("student", {}))
        if not d or d.get("mean") is None:
            continue
        gain = f"the student {what} {_pts(d)} vs the base"
        if d["lo"] > 0:
            drop = m.get("probe", {}).get("drop", {})
            if drop.get("lo") is not None and drop["lo"] > 0:
                return _said(
                    "worked-with-forgetting",
                    f"{gain}, but it lost general skills (probe drop {_pts(drop)}); lower "
                    "--epochs or --lr, or mix general examples into train",
                )
            return _said("worked", gain)
        if d["hi"] < 0:
            return _said("did-not-work", f"{gain}; check the training data and train.jsonl")
        return _said(
            "cannot-tell",
            f"{gain}: the interval includes 0; hold out more examples or train on more data",
        )
    return _said(
        "cannot-tell",
        "no style spec and no judge: nothing measures the behaviour; "
        "pass the run a style spec or `distill eval --judge MODEL`",
    )


def _centred(e: dict[str, Any]) -> dict[str, Any] | None:
    """A win rate as a difference from a tie (0.5), so the same rule reads both."""
    if e.get("mean") is None:
        return None
    return {k: e[k] - 0.5 for k in ("mean", "lo", "hi")}


def _said(outcome: str, text: str) -> dict[str, str]:
    words = {
        "worked": "Distillation worked",
        "worked-with-forgetting": "Distillation worked, with forgetting",
        "did-not-work": "Distillation did not work",
        "cannot-tell": "Cannot tell whether distillation worked",
    }
    return {"outcome": outcome, "text": f"{words[outcome]}: {text}."}


def estimate_text(e: dict[str, Any] | Estimate, percent: bool = True, diff: bool = False) -> str:
    """`78% (CI 70..85%)`, `+66 pts (CI +50..+80)` or `61.3 (CI 58.0..64.1)` for the
    terminal and the report."""
    d = e.to_dict() if isinstance(e, Estimate) else e
    if d.get("mean") is None:
        return "n/a"
    if percent and diff:
        return f"{100 * d['mean']:+.0f} pts (CI {100 * d['lo']:+.0f}..{100 * d['hi']:+.0f})"
    if percent:
        return f"{100 * d['mean']:.0f}% (CI {100 * d['lo']:.0f}..{100 * d['hi']:.0f}%)"
    sign = "+" if diff else ""
    return f"{d['mean']:{sign}.3g} (CI {d['lo']:{sign}.3g}..{d['hi']:{sign}.3g})"
