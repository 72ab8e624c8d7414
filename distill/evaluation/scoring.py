"""Every metric from the collected answers: style, closeness, the judge, copying, the loss
gap and the general-skills probe, each with a bootstrap interval."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.evaluation.embeddings import EMBEDDING_MODEL, Embedder, cosine
from distill.evaluation.inputs import Item, Verdict
from distill.evaluation.verdict import headline, verdict_line
from distill.models import parse_model
from distill.runs import (
    Run,
    read_jsonl,
)
from distill.stages import metrics
from distill.stages.metrics import bootstrap
from distill.style import StyleSpec


@dataclass
class Answer:
    text: str | None = None
    error: str | None = None


@dataclass
class Plan:
    """Which models take part, and why a judge is absent when it is."""

    student: str
    base: str
    judge: str | None
    judge_skipped: str | None = None
    judge_base_url: str | None = None  # the teacher's server, when the teacher judges


@dataclass
class Answers:
    student: list[Answer]
    base: list[Answer]
    probe_student: list[Answer]
    probe_base: list[Answer]
    # per item: (student shown first, base shown first); None when no judge or no pair
    verdicts: list[tuple[Verdict | str | None, Verdict | str | None]]
    # more students asked the same items and probe (eval's `compare`, e.g. the SFT student
    # of a DPO one): model -> (replies, probe answers, verdicts against the base)
    extra: dict[str, Extra] = field(default_factory=dict)


@dataclass
class Extra:
    replies: list[Answer]
    probe: list[Answer]
    verdicts: list[tuple[Verdict | str | None, Verdict | str | None]]


def score(
    run: Run,
    plan: Plan,
    style: StyleSpec | None,
    items: list[Item],
    probe: list[dict[str, Any]],
    ans: Answers,
    embed: Embedder | None,
    embed_reason: str | None,
    skipped: Sequence[tuple[dict[str, Any], str]] = (),
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every metric from the collected answers: (report, results rows)."""
    results: list[dict[str, Any]] = []
    for it, s, b in zip(items, ans.student, ans.base, strict=True):
        results.append(
            {
                "kind": "example",
                "id": it.id,
                "context": it.context,
                "reference": {"text": it.reference},
                "meta": {k: it.meta[k] for k in AXES if k in it.meta},
                "student": _reply_row(s),
                "base": _reply_row(b),
            }
        )
    paired = [
        i
        for i, r in enumerate(results)
        if r["student"]["text"] is not None and r["base"]["text"] is not None
    ]
    m: dict[str, Any] = {}

    # style
    if style is None:
        m["style"] = {"skipped": "the run records no style spec (manifest inputs.style.path)"}
    else:
        for r in results:
            for who in ("student", "base", "reference"):
                if r[who]["text"] is not None:
                    problems = style.check_reply(r[who]["text"])
                    r[who]["style_problems"] = problems
                    r[who]["style_pass"] = not problems
        m["style"] = _compare(results, paired, "style_pass", reference=True)
        m["style_by_axis"] = by_axis(results, paired, "style_pass")

    # chrF against the reference
    for r in results:
        for who in ("student", "base"):
            if r[who]["text"] is not None:
                r[who]["chrf"] = round(metrics.chrf(r[who]["text"], r["reference"]["text"]), 4)
    m["chrf"] = _compare(results, paired, "chrf")

    # embedding similarity to the reference
    if embed is None:
        m["similarity"] = {"skipped": f"similarity skipped: {embed_reason}"}
    elif paired:
        refs = embed([results[i]["reference"]["text"] for i in paired])
        for who in ("student", "base"):
            vecs = embed([results[i][who]["text"] for i in paired])
            for i, sim in zip(paired, cosine(vecs, refs), strict=True):
                results[i][who]["similarity"] = round(sim, 6)
        m["similarity"] = {**_compare(results, paired, "similarity"), "model": EMBEDDING_MODEL}
        m["similarity_by_axis"] = by_axis(results, paired, "similarity")
    else:
        m["similarity"] = {"skipped": "no example where both models replied"}

    # judge
    m["win_rate"] = _judge(results, ans.verdicts, plan)
    if "skipped" not in m["win_rate"]:
        m["win_rate_by_axis"] = by_axis(
            results,
            paired,
            "student_points",
            lambda idx: {
                "student": bootstrap(
                    [results[i]["student_points"] for i in idx if "student_points" in results[i]]
                ).to_dict()
            },
        )

    # overfitting: verbatim copies and the loss gap
    m["copying"] = _copying(run, results)
    m["loss"] = _loss(run, plan)

    # forgetting
    probe_rows, m["probe"] = _probe(probe, ans.probe_student, ans.probe_base)
    results.extend(probe_rows)

    errors = {
        "student": sum(1 for a in ans.student + ans.probe_student if a.error),
        "base": sum(1 for a in ans.base + ans.probe_base if a.error),
        "judge": sum(1 for v in ans.verdicts for x in v if isinstance(x, str)),
    }
    report: dict[str, Any] = {
        "run": str(run.path),
        "student": plan.student,
        "base": plan.base,
        "judge": plan.judge,
        "examples": len(items),
        "paired": len(paired),
        "probe_items": len(probe),
        "style_spec": style.source if style else None,
        "metrics": m,
        "errors": errors,
        "skipped_examples": [{"id": rec.get("id"), "reason": why} for rec, why in skipped],
    }
    if ans.extra:
        report["side_by_side"] = side_by_side(report, plan, style, results, probe, ans)
    report["verdict"] = verdict_line(report)
    report["headline"] = headline(report)
    return report, results


def side_by_side(
    report: dict[str, Any],
    plan: Plan,
    style: StyleSpec | None,
    results: list[dict[str, Any]],
    probe: list[dict[str, Any]],
    ans: Answers,
) -> dict[str, Any]:
    """Base, each compared student and the student on the same held-out items and probe:
    style pass rate, its gain over the base (paired), the judge's win rate against the base,
    the probe and its drop. Each extra's replies are added to the results rows as well."""
    m = report["metrics"]
    examples = [r for r in results if r.get("kind") == "example"]
    base_pass = [r["base"].get("style_pass") for r in examples]
    base_probe = [
        a.text is not None and metrics.check_probe(p, a.text)
        for p, a in zip(probe, ans.probe_base, strict=True)
    ]

    def column(role: str, model: str) -> dict[str, Any]:
        return {"role": role, "model": model}

    rows = [
        {
            **column("base", plan.base),
            "style": (m["style"].get("base") if "skipped" not in m["style"] else None),
            "probe": m["probe"]["base"],
        }
    ]
    for model, extra in ans.extra.items():
        passes: list[float] = []
        gains: list[float] = []
        for r, a, b in zip(examples, extra.replies, base_pass, strict=True):
            r.setdefault("compare", {})[model] = _reply_row(a)
            if style is None or a.text is None:
                continue
            ok = not style.check_reply(a.text)
            r["compare"][model]["style_pass"] = ok
            passes.append(float(ok))
            if b is not None:
                gains.append(float(ok) - float(b))
        p_vals = [
            float(metrics.check_probe(p, a.text))
            for p, a in zip(probe, extra.probe, strict=True)
            if a.text is not None
        ]
        drops = [
            float(b) - float(metrics.check_probe(p, a.text))
            for p, a, b, pb in zip(probe, extra.probe, base_probe, ans.probe_base, strict=True)
            if a.text is not None and pb.text is not None
        ]
        win = _judge(
            [{} for _ in examples],
            extra.verdicts,
            Plan(model, plan.base, plan.judge, plan.judge_skipped),
        )
        rows.append(
            {
                **column("compared", model),
                "style": bootstrap(passes).to_dict() if style else None,
                "style_gain": bootstrap(gains).to_dict() if style else None,
                "win_rate": win,
                "probe": bootstrap(p_vals).to_dict(),
                "probe_drop": bootstrap(drops).to_dict(),
            }
        )
    rows.append(
        {
            **column("student", plan.student),
            "style": m["style"].get("student") if "skipped" not in m["style"] else None,
            "style_gain": m["style"].get("diff") if "skipped" not in m["style"] else None,
            "win_rate": m["win_rate"],
            "probe": m["probe"]["student"],
            "probe_drop": m["probe"]["drop"],
        }
    )
    return {"models": rows}


def _reply_row(a: Answer) -> dict[str, Any]:
    row: dict[str, Any] = {"text": a.text}
    if a.error:
        row["error"] = a.error
    return row


def _values(results: list[dict[str, Any]], idx: Sequence[int], who: str, key: str) -> list[float]:
    return [float(results[i][who][key]) for i in idx if key in results[i][who]]


AXES = ("topic", "persona", "intent", "turns")


def by_axis(
    results: list[dict[str, Any]],
    paired: list[int],
    key: str,
    compare: Callable[[list[int]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`key` per value of each plan axis the held-out examples record (topic, persona, intent,
    turns): where the student is weak. Weakest student rate first; intervals come with the
    counts (a value with 2 examples says little). `compare(indices)` replaces the student /
    base comparison of `key` (the judge's points are per example, not per reply)."""
    compare = compare or (lambda idx: _compare(results, idx, key))
    out: dict[str, Any] = {}
    for axis in AXES:
        groups: dict[str, list[int]] = {}
        for i in paired:
            value = results[i].get("meta", {}).get(axis)
            if value not in (None, ""):
                groups.setdefault(str(value), []).append(i)
        if len(groups) < 2:
            continue
        rows = [{"value": v, "n": len(idx), **compare(idx)} for v, idx in groups.items()]
        out[axis] = sorted(
            rows, key=lambda r: (r["student"]["mean"] is None, r["student"]["mean"] or 0)
        )
    return out


def _compare(
    results: list[dict[str, Any]], paired: list[int], key: str, reference: bool = False
) -> dict[str, Any]:
    """Student, base (and reference) means over the paired examples, and the paired
    difference student - base, each with its interval."""
    out = {
        "student": bootstrap(_values(results, paired, "student", key)).to_dict(),
        "base": bootstrap(_values(results, paired, "base", key)).to_dict(),
    }
    if reference:
        every = list(range(len(results)))
        out["reference"] = bootstrap(_values(results, every, "reference", key)).to_dict()
    diffs = [
        float(results[i]["student"][key]) - float(results[i]["base"][key])
        for i in paired
        if key in results[i]["student"] and key in results[i]["base"]
    ]
    out["diff"] = bootstrap(diffs).to_dict()
    return out


def _judge(
    results: list[dict[str, Any]],
    verdicts: list[tuple[Verdict | str | None, Verdict | str | None]],
    plan: Plan,
) -> dict[str, Any]:
    if plan.judge is None:
        return {"skipped": f"win rate skipped: {plan.judge_skipped}"}
    points: list[float] = []
    tally = {"win": 0, "tie": 0, "loss": 0}
    consistent = judged_both = failed = 0
    for r, (first, second) in zip(results, verdicts, strict=True):
        rows: list[dict[str, Any]] = []
        pts: list[float] = []
        for v, student_is, order in ((first, "A", "student first"), (second, "B", "base first")):
            if v is None:
                continue
            if isinstance(v, str):
                failed += 1
                rows.append({"order": order, "error": v})
                continue
            p = metrics.student_points(v.winner, student_is)
            pts.append(p)
            tally["win" if p == 1 else "tie" if p == 0.5 else "loss"] += 1
            rows.append(
                {"order": order, "winner": v.winner, "reason": v.reason, "student_points": p}
            )
        if rows:
            r["judge"] = rows
        if pts:
            r["student_points"] = sum(pts) / len(pts)
            points.append(r["student_points"])
        if len(pts) == 2:
            judged_both += 1
            consistent += pts[0] == pts[1]
    if failed and not points:
        first = next(j["error"] for r in results for j in r.get("judge", []) if "error" in j)
        return {"skipped": f"win rate skipped: every judge call failed; the first error: {first}"}
    return {
        "judge": plan.judge,
        "student": bootstrap(points).to_dict(),
        "judgments": tally,
        "order_consistent": (consistent / judged_both) if judged_both else None,
        "failed": failed,
    }


def _copying(run: Run, results: list[dict[str, Any]]) -> dict[str, Any]:
    train = run.file("train.jsonl")
    if not train.exists():
        return {"skipped": f"{train}: missing, so verbatim copying was not checked"}
    replies = [
        m.get("content") or ""
        for rec in read_jsonl(train)
        for m in rec.get("messages", [])
        if isinstance(m, dict) and m.get("role") == "assistant"
    ]
    index = metrics.ngram_index(replies)
    out: dict[str, Any] = {"ngram_words": metrics.COPY_NGRAM}
    for who in ("student", "base", "reference"):
        vals = []
        for r in results:
            text = r[who]["text"]
            if text is None:
                continue
            span = metrics.copied_span(text, index)
            r[who]["copied"] = span
            vals.append(1.0 if span else 0.0)
        out[who] = bootstrap(vals).to_dict()
    return out


def _hosted_metrics(run: Run, student: str) -> Path | None:
    """The result CSV `distill train` downloaded for the hosted job that made `student`."""
    ref = parse_model(student)
    if ref.provider != "openai":
        return None
    for job in sorted((run.path / "train").glob("*/job.json")):
        try:
            state = json.loads(job.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if state.get("fine_tuned_model") == ref.name:
            return next(iter(sorted(job.parent.glob("*.csv"))), None)
    return None


def _loss(run: Run, plan: Plan) -> dict[str, Any]:
    if (csv_path := _hosted_metrics(run, plan.student)) is not None:
        gap = metrics.loss_gap_csv(csv_path)
        if gap is None:
            return {"skipped": f"{csv_path}: no train_loss and valid_loss pair recorded"}
        return gap
    logs = sorted((run.path / "train").glob("*/log.jsonl"))
    if not logs:
        return {"skipped": "no training log or hosted result metrics in train/"}
    chosen = None
    ref = parse_model(plan.student)
    if ref.provider == "local":
        p = Path(ref.name).expanduser().resolve()
        for log in logs:
            if log.parent.resolve() in (p, *p.parents):
                chosen = log
    if (
        chosen is None
        and len(logs) == 1
        and (run.manifest.get("student") or {}).get("model") == plan.student
    ):
        chosen = logs[0]
    if chosen is None:
        return {"skipped": "no training log belongs to this student"}
    gap = metrics.loss_gap(chosen)
    if gap is None:
        return {"skipped": f"{chosen}: no train_loss and eval_loss pair recorded"}
    return gap


def _probe(
    probe: list[dict[str, Any]], student: list[Answer], base: list[Answer]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = []
    s_vals: list[float] = []
    b_vals: list[float] = []
    drops: list[float] = []
    by_skill: dict[str, dict[str, list[float]]] = {}
    for item, s, b in zip(probe, student, base, strict=True):
        row: dict[str, Any] = {"kind": "probe", "check": "contains", **item}
        for who, a, vals in (("student", s, s_vals), ("base", b, b_vals)):
            row[who] = _reply_row(a)
            if a.text is not None:
                ok = metrics.check_probe(item, a.text)
                row[who]["pass"] = ok
                vals.append(float(ok))
                by_skill.setdefault(item.get("skill", "other"), {}).setdefault(who, []).append(ok)
        if s.text is not None and b.text is not None:
            drops.append(float(row["base"]["pass"]) - float(row["student"]["pass"]))
        rows.append(row)
    summary = {
        "student": bootstrap(s_vals).to_dict(),
        "base": bootstrap(b_vals).to_dict(),
        "drop": bootstrap(drops).to_dict(),
        "by_skill": {
            k: {who: sum(v) / len(v) for who, v in d.items() if v}
            for k, d in sorted(by_skill.items())
        },
    }
    return rows, summary
