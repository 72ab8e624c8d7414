"""report.html for `distill eval`: one self-contained file (inline CSS, inline SVG charts, no
script, no network) with the metrics, their intervals and the replies side by side.

Every piece of model or user text goes through `esc` (html.escape); a Content-Security-Policy
forbids scripts and remote loads as a second guard."""

from __future__ import annotations

from html import escape
from typing import Any

STUDENT, BASE, REFERENCE = "#2f7d4f", "#8a8f98", "#c98a2b"
WIN, TIE, LOSS = "#2f7d4f", "#c9ccd1", "#b5483b"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2125;
background:#fff;max-width:1280px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.verdict{font-size:16px;background:#eef6f0;border-left:4px solid #2f7d4f;padding:8px 12px}
.meta{color:#555}.charts{display:flex;flex-wrap:wrap;gap:16px}
.chart{border:1px solid #e2e4e8;border-radius:6px;padding:6px}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #e2e4e8;padding:6px;
vertical-align:top;text-align:left}th{background:#f6f7f9}
.reply{white-space:pre-wrap;word-break:break-word;font-family:inherit;margin:0}
.pass{color:#2f7d4f;font-weight:600}.fail{color:#b5483b;font-weight:600}.note{color:#666;font-size:12px}
.skip{color:#666;font-style:italic}
"""


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _pct(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _est(e: dict[str, Any] | None, scale: float = 100.0, unit: str = "%") -> str:
    if not e or e.get("mean") is None:
        return "n/a"
    return (
        f"{scale * e['mean']:.1f}{unit} (95% CI {scale * e['lo']:.1f}..{scale * e['hi']:.1f}{unit}, "
        f"n={e['n']})"
    )


# -- charts -------------------------------------------------------------------------------


def bar_chart(
    title: str,
    bars: list[tuple[str, dict[str, Any] | None, str]],
    *,
    scale: float = 100.0,
    top: float = 100.0,
    unit: str = "%",
    width: int = 300,
    height: int = 220,
) -> str:
    """Vertical bars with 95% interval whiskers; a missing value is drawn as 'n/a'."""
    pad_l, pad_r, pad_t, pad_b = 36, 10, 40, 36
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{esc(title)}">',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13" '
        f'font-weight="600">{esc(title)}</text>',
    ]

    def y(v: float) -> float:
        return pad_t + plot_h * (1 - max(0.0, min(v, top)) / top)

    for tick in (0, 0.5, 1.0):
        ty = y(top * tick)
        parts.append(
            f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{ty:.1f}" y2="{ty:.1f}" '
            'stroke="#e2e4e8"/>'
            f'<text x="{pad_l - 4}" y="{ty + 4:.1f}" text-anchor="end" font-size="10" '
            f'fill="#666">{top * tick:g}{esc(unit)}</text>'
        )
    slot = plot_w / max(len(bars), 1)
    bw = min(56.0, slot * 0.6)
    for i, (label, e, color) in enumerate(bars):
        cx = pad_l + slot * (i + 0.5)
        parts.append(
            f'<text x="{cx:.1f}" y="{height - pad_b + 16}" text-anchor="middle" '
            f'font-size="11">{esc(label)}</text>'
        )
        if not e or e.get("mean") is None:
            parts.append(
                f'<text x="{cx:.1f}" y="{y(0) - 6:.1f}" text-anchor="middle" font-size="11" '
                'fill="#999">n/a</text>'
            )
            continue
        v = scale * e["mean"]
        parts.append(
            f'<rect x="{cx - bw / 2:.1f}" y="{y(v):.1f}" width="{bw:.1f}" '
            f'height="{y(0) - y(v):.1f}" fill="{color}"/>'
        )
        lo, hi = y(scale * e["lo"]), y(scale * e["hi"])
        parts.append(
            f'<path d="M{cx:.1f} {lo:.1f}V{hi:.1f}M{cx - 6:.1f} {lo:.1f}h12M{cx - 6:.1f} '
            f'{hi:.1f}h12" stroke="#1d2125" stroke-width="1.5" fill="none"/>'
            f'<text x="{cx:.1f}" y="{min(y(v), hi) - 4:.1f}" text-anchor="middle" '
            f'font-size="11">{v:.0f}{esc(unit)}</text>'
        )
    parts.append("</svg>")
    return '<div class="chart">' + "".join(parts) + "</div>"


def judge_chart(win: dict[str, Any], width: int = 300, height: int = 220) -> str:
    """One stacked bar of the judgments (student win / tie / base win) and the win rate."""
    tally = win.get("judgments", {})
    total = sum(tally.values()) or 1
    x0, bar_w, y0, bar_h = 20, width - 40, 60, 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'role="img" aria-label="judge verdicts">',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13" '
        'font-weight="600">Judge: student vs base</text>',
    ]
    x = float(x0)
    for key, color in (("win", WIN), ("tie", TIE), ("loss", LOSS)):
        n = tally.get(key, 0)
        w = bar_w * n / total
        if w > 0:
            parts.append(
                f'<rect x="{x:.1f}" y="{y0}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>'
            )
            if w > 28:
                parts.append(
                    f'<text x="{x + w / 2:.1f}" y="{y0 + 25}" text-anchor="middle" '
                    f'font-size="11" fill="#fff">{n}</text>'
                )
        x += w
    legend_y = y0 + bar_h + 24
    for i, (color, label) in enumerate(
        ((WIN, "student better"), (TIE, "tie"), (LOSS, "base better"))
    ):
        lx = x0 + i * 100
        parts.append(
            f'<rect x="{lx}" y="{legend_y - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14}" y="{legend_y}" font-size="11">{esc(label)}</text>'
        )
    e = win.get("student", {})
    parts.append(
        f'<text x="{width / 2}" y="{legend_y + 34}" text-anchor="middle" font-size="12">'
        f"win rate {esc(_est(e))}</text>"
    )
    consistent = win.get("order_consistent")
    if consistent is not None:
        parts.append(
            f'<text x="{width / 2}" y="{legend_y + 54}" text-anchor="middle" font-size="11" '
            f'fill="#666">same verdict in both orders: {_pct(consistent)}</text>'
        )
    parts.append("</svg>")
    return '<div class="chart">' + "".join(parts) + "</div>"


# -- sections -----------------------------------------------------------------------------


def _charts(m: dict[str, Any]) -> str:
    out = []
    st = m.get("style", {})
    if "skipped" not in st:
        out.append(
            bar_chart(
                "Style pass rate",
                [
                    ("student", st.get("student"), STUDENT),
                    ("base", st.get("base"), BASE),
                    ("reference", st.get("reference"), REFERENCE),
                ],
            )
        )
    ch = m.get("chrf", {})
    out.append(
        bar_chart(
            "chrF to the reference",
            [("student", ch.get("student"), STUDENT), ("base", ch.get("base"), BASE)],
            scale=1.0,
            unit="",
        )
    )
    sim = m.get("similarity", {})
    if "skipped" not in sim:
        out.append(
            bar_chart(
                "Embedding similarity (cosine x100)",
                [("student", sim.get("student"), STUDENT), ("base", sim.get("base"), BASE)],
                unit="",
            )
        )
    wr = m.get("win_rate", {})
    if "skipped" not in wr:
        out.append(judge_chart(wr))
    pr = m.get("probe", {})
    out.append(
        bar_chart(
            "General-skills probe",
            [("student", pr.get("student"), STUDENT), ("base", pr.get("base"), BASE)],
        )
    )
    cp = m.get("copying", {})
    if "skipped" not in cp:
        out.append(
            bar_chart(
                f"Copies a training reply ({cp.get('ngram_words')}+ words)",
                [
                    ("student", cp.get("student"), STUDENT),
                    ("base", cp.get("base"), BASE),
                    ("reference", cp.get("reference"), REFERENCE),
                ],
            )
        )
    return '<div class="charts">' + "".join(out) + "</div>"


def _summary(report: dict[str, Any]) -> str:
    m = report["metrics"]
    rows: list[tuple[str, str, str, str]] = []

    def add(name: str, section: dict[str, Any], scale: float = 100.0, unit: str = "%") -> None:
        if "skipped" in section:
            rows.append((name, f'<span class="skip">{esc(section["skipped"])}</span>', "", ""))
            return
        diff = section.get("diff")
        if section.get("drop"):  # the probe keeps base - student; show student - base
            d = section["drop"]
            diff = (
                d
                if d["mean"] is None
                else {**d, "mean": -d["mean"], "lo": -d["hi"], "hi": -d["lo"]}
            )
        rows.append(
            (
                name,
                esc(_est(section.get("student"), scale, unit)),
                esc(_est(section.get("base"), scale, unit)),
                esc(_est(diff, scale, unit if unit != "%" else " pts")) if diff else "",
            )
        )

    add("style pass rate", m.get("style", {}))
    add("chrF to reference", m.get("chrf", {}), 1.0, "")
    add("embedding similarity (x100)", m.get("similarity", {}), 100.0, "")
    wr = m.get("win_rate", {})
    if "skipped" in wr:
        rows.append(("judge win rate", f'<span class="skip">{esc(wr["skipped"])}</span>', "", ""))
    else:
        rows.append(("judge win rate", esc(_est(wr.get("student"))), "", ""))
    add("copies training text", m.get("copying", {}))
    add("probe pass rate", m.get("probe", {}))
    lg = m.get("loss", {})
    if "skipped" in lg:
        loss = f'<span class="skip">{esc(lg["skipped"])}</span>'
    else:
        loss = esc(
            f"train {lg['train_loss']:.3f}, eval {lg['eval_loss']:.3f}, gap {lg['gap']:+.3f} "
            f"(best eval {lg['best_eval_loss']:.3f}"
            + (
                f", before training {lg['base_eval_loss']:.3f})"
                if lg.get("base_eval_loss") is not None
                else ")"
            )
        )
    rows.append(("loss (train vs eval)", loss, "", ""))
    body = "".join(
        f"<tr><td>{a}</td><td>{b}</td><td>{c}</td><td>{d}</td></tr>" for a, b, c, d in rows
    )
    return (
        "<table><tr><th>metric</th><th>student</th><th>base</th>"
        "<th>student - base</th></tr>" + body + "</table>"
    )


def _side_by_side(report: dict[str, Any]) -> str:
    """Base, each compared student (e.g. the SFT one) and the student, in columns."""
    side = report.get("side_by_side")
    if not side:
        return ""
    models = side["models"]

    def cell(section: Any) -> str:
        if not section:
            return "<td></td>"
        if "skipped" in section:
            return "<td class='note'>skipped</td>"
        if "student" in section and "mean" not in section:  # a win-rate section
            section = section["student"]
        return f"<td>{esc(_est(section))}</td>"

    head = "".join(f"<th>{esc(r['role'])}: {esc(r['model'])}</th>" for r in models)
    rows = "".join(
        f"<tr><td>{esc(name)}</td>{''.join(cell(r.get(key)) for r in models)}</tr>"
        for name, key in (
            ("style pass rate", "style"),
            ("style gain vs base", "style_gain"),
            ("judge prefers it over base", "win_rate"),
            ("general-skills probe", "probe"),
            ("probe drop vs base", "probe_drop"),
        )
    )
    return (
        "<h2>Side by side: the same held-out examples and probe</h2>"
        f"<table><tr><th>metric</th>{head}</tr>{rows}</table>"
    )


def axis_chart(axis: str, rows: list[dict[str, Any]], width: int = 560) -> str:
    """Horizontal bars, one pair (student, base) per value of a plan axis, weakest student
    first, with 95% interval whiskers: where the student is weak at a glance."""
    label_w, pad_r, row_h, top = 190, 46, 26, 30
    plot_w = width - label_w - pad_r
    height = top + row_h * len(rows) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="style pass rate by {esc(axis)}">',
        f'<text x="{label_w}" y="16" font-size="13" font-weight="600">style pass rate by '
        f'{esc(axis)}: <tspan fill="{STUDENT}">student</tspan> / '
        f'<tspan fill="{BASE}">base</tspan></text>',
    ]
    for i, r in enumerate(rows):
        y0 = top + row_h * i
        label = str(r["value"])
        label = label if len(label) <= 28 else label[:27] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y0 + 14}" text-anchor="end" font-size="11">'
            f"{esc(label)} (n={esc(r['n'])})</text>"
        )
        for k, (who, color) in enumerate((("student", STUDENT), ("base", BASE))):
            e = r.get(who) or {}
            if e.get("mean") is None:
                continue
            y = y0 + 3 + k * 10
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{plot_w * e["mean"]:.1f}" height="8" '
                f'fill="{color}"/>'
                f'<path d="M{label_w + plot_w * e["lo"]:.1f} {y + 4}H{label_w + plot_w * e["hi"]:.1f}"'
                ' stroke="#1d2125" stroke-width="1"/>'
            )
        s_mean = (r.get("student") or {}).get("mean")
        if s_mean is not None:
            parts.append(
                f'<text x="{label_w + plot_w + 4}" y="{y0 + 14}" font-size="11">'
                f"{100 * s_mean:.0f}%</text>"
            )
    parts.append("</svg>")
    return '<div class="chart">' + "".join(parts) + "</div>"


def _more(extra: dict[str, Any], names: list[str], axis: str, row: dict[str, Any]) -> str:
    """The similarity and win-rate cells of one axis value's row."""
    out = ""
    for name in names:
        e = (extra[name][axis].get(row["value"]) or {}).get("student")
        out += f"<td>{esc(_est(e, 1.0, '') if name == 'similarity' else _est(e))}</td>"
    return out


def _by_axis(m: dict[str, Any]) -> str:
    """Per plan axis value: a chart and a table of the style pass rate (weakest student rate
    first), with the similarity to the reference and the judge's win rate where measured."""
    axes = m.get("style_by_axis") or {}
    if not axes:
        return (
            "<p class='note'>The held-out examples record no plan axes (topic, persona, ...).</p>"
        )
    extra = {
        name: {a: {r["value"]: r for r in rows} for a, rows in (m.get(key) or {}).items()}
        for name, key in (("similarity", "similarity_by_axis"), ("judge", "win_rate_by_axis"))
    }
    parts = []
    for axis, rows in axes.items():
        more = [name for name in extra if axis in extra[name]]
        head = "".join(
            f"<th>{'student similarity' if n == 'similarity' else 'judge prefers student'}</th>"
            for n in more
        )

        body = "".join(
            f"<tr><td>{esc(r['value'])}</td><td>{esc(r['n'])}</td>"
            f"<td>{esc(_est(r['student']))}</td><td>{esc(_est(r['base']))}</td>"
            f"<td>{esc(_est(r['diff'], 100.0, ' pts'))}</td>{_more(extra, more, axis, r)}</tr>"
            for r in rows
        )
        parts.append(
            f"<h3>by {esc(axis)}</h3>{axis_chart(axis, rows)}<table><tr><th>{esc(axis)}</th>"
            "<th>examples</th><th>student</th><th>base</th><th>student - base</th>"
            f"{head}</tr>" + body + "</table>"
        )
    return "".join(parts)


def _reply_cell(row: dict[str, Any], show_copy: bool = True) -> str:
    if row.get("text") is None:
        return f'<span class="fail">error: {esc(row.get("error"))}</span>'
    notes = []
    if "style_pass" in row:
        if row["style_pass"]:
            notes.append('<span class="pass">style ok</span>')
        else:
            notes.append(
                '<span class="fail">style: ' + esc("; ".join(row["style_problems"])) + "</span>"
            )
    if "chrf" in row:
        notes.append(f"chrF {row['chrf']:.1f}")
    if "similarity" in row:
        notes.append(f"cos {row['similarity']:.2f}")
    if show_copy and row.get("copied"):
        notes.append('<span class="fail">copies: “' + esc(row["copied"]) + "”</span>")
    return f'<pre class="reply">{esc(row["text"])}</pre><div class="note">{" · ".join(notes)}</div>'


def _context_cell(context: list[dict[str, Any]]) -> str:
    turns = [m for m in context if m.get("role") != "system"]
    if not turns:
        return ""
    last = turns[-1]
    earlier = "".join(
        f'<pre class="reply"><b>{esc(m.get("role"))}:</b> {esc(m.get("content"))}</pre>'
        for m in turns[:-1]
    )
    head = f"<details><summary>{len(turns) - 1} earlier turns</summary>{earlier}</details>"
    return (head if earlier else "") + f'<pre class="reply">{esc(last.get("content"))}</pre>'


def _judge_cell(row: dict[str, Any]) -> str:
    out = []
    for j in row.get("judge", []):
        if "error" in j:
            out.append(
                f'<div class="fail">{esc(j["order"])}: judge failed: {esc(j["error"])}</div>'
            )
            continue
        who = {1.0: "student", 0.5: "tie", 0.0: "base"}[j["student_points"]]
        out.append(
            f'<div><b>{esc(j["order"])}: {esc(who)}</b> <span class="note">{esc(j["reason"])}</span></div>'
        )
    return "".join(out)


def _examples(results: list[dict[str, Any]], judged: bool) -> str:
    rows = []
    for r in results:
        if r.get("kind") != "example":
            continue
        cells = [
            f'<td><div class="note">{esc(r["id"])}</div>{_context_cell(r["context"])}</td>',
            f"<td>{_reply_cell(r['reference'])}</td>",
            f"<td>{_reply_cell(r['student'])}</td>",
            f"<td>{_reply_cell(r['base'])}</td>",
        ]
        if judged:
            cells.append(f"<td>{_judge_cell(r)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "<th>customer</th><th>reference</th><th>student</th><th>base</th>"
    if judged:
        head += "<th>judge</th>"
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _probe_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        if r.get("kind") != "probe":
            continue
        cells = [
            f"<td>{esc(r['prompt'])}<div class='note'>expects {esc(r['check'])}: {esc(r['answer'])}</div></td>"
        ]
        for who in ("student", "base"):
            a = r[who]
            if a.get("text") is None:
                cells.append(f'<td><span class="fail">error: {esc(a.get("error"))}</span></td>')
                continue
            mark = (
                '<span class="pass">pass</span>'
                if a.get("pass")
                else '<span class="fail">fail</span>'
            )
            cells.append(f'<td>{mark}<pre class="reply">{esc(a["text"])}</pre></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        "<table><tr><th>probe prompt</th><th>student</th><th>base</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def render_report(report: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """The whole report page as one string."""
    m = report["metrics"]
    judged = "skipped" not in m.get("win_rate", {})
    skipped = report.get("skipped_examples") or []
    skipped_html = (
        "<p class='note'>"
        + esc(f"{len(skipped)} eval examples had nothing to hold out and were left out ")
        + "(rejected.jsonl lists them).</p>"
        if skipped
        else ""
    )
    errors = report.get("errors") or {}
    err_html = ""
    if any(errors.values()):
        err_html = (
            "<p class='fail'>"
            + esc(
                "failed calls (left out of the metrics): "
                + ", ".join(f"{k} {v}" for k, v in errors.items() if v)
            )
            + "</p>"
        )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>distill eval: {esc(report['student'])}</title><style>{CSS}</style></head><body>"
        f"<h1>distill eval: {esc(report['student'])}</h1>"
        f"<p class='meta'>base {esc(report['base'])} · judge {esc(report.get('judge') or 'none')}"
        f" · {esc(report['examples'])} held-out examples · {esc(report['probe_items'])} probe "
        f"prompts · run {esc(report['run'])}</p>"
        f"<p class='verdict'><b>{esc(report.get('headline', {}).get('text', ''))}</b><br>"
        f"{esc(report['verdict'])}</p>{err_html}{skipped_html}"
        f"<h2>Charts</h2>{_charts(m)}"
        "<p class='note'>Bars are means; whiskers are bootstrap 95% intervals.</p>"
        f"<h2>Summary</h2>{_summary(report)}"
        f"{_side_by_side(report)}"
        f"<h2>Where the student is weak: style pass rate by plan axis</h2>{_by_axis(m)}"
        f"<h2>Replies side by side</h2>{_examples(results, judged)}"
        f"<h2>General-skills probe</h2>{_probe_table(results)}"
        "</body></html>\n"
    )
