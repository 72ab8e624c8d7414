"""The human gate before training: examples with automatic flags, and a log of decisions.

Every decision is one whole line appended (and fsynced) to the run's `review.jsonl` the
moment it is made; the last decision per id wins. `split` applies them with `apply_decisions`
when it writes train.jsonl / eval.jsonl; `train` applies the current ones again with
`apply_review_gate`, so a decision made after the split still reaches training.
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from distill.errors import InputError, RunError
from distill.records import Conversation, Example, content_id
from distill.runs import (
    Run,
    append_jsonl,
    atomic_write_text,
    read_jsonl,
)
from distill.style import StyleSpec, count_words

REVIEW_FILE = "review.jsonl"
DECISIONS = ("accept", "reject", "edit")
STATUS = {"accept": "accepted", "reject": "rejected", "edit": "edited", None: "unreviewed"}
FILTERS = ("all", "unreviewed", "flagged", "accepted", "rejected", "edited")
ROLES = ("system", "user", "assistant", "tool", "function")


class EditRefused(ValueError):
    """An edit that breaks the chat format or the style spec; the message says how."""


@dataclass(frozen=True)
class Flag:
    """Something a reviewer should look at: kind (short, for the list) and detail."""

    kind: str
    detail: str


# -- loading ----------------------------------------------------------------------------------
def input_path(run: Run) -> Path:
    """deduped.jsonl when dedupe has run, else generated.jsonl."""
    for name in ("deduped.jsonl", "generated.jsonl"):
        if (p := run.file(name)).exists():
            return p
    raise RunError(
        f"{run.file('generated.jsonl')}: missing; run `distill generate` (and `distill dedupe`) "
        "before `distill review`"
    )


def review_paths(run: Run) -> list[Path]:
    """The files under review: input_path(), then what `distill improve` added to train."""
    added = run.file("improve.jsonl")
    return [input_path(run), *([added] if added.exists() else [])]


def load_examples(run: Run) -> list[Example]:
    """The examples under review, in file order."""
    out: list[Example] = []
    for path in review_paths(run):
        for n, rec in enumerate(read_jsonl(path), 1):
            try:
                out.append(Example.from_chat(rec))
            except (ValidationError, KeyError, TypeError) as e:
                raise InputError(
                    f"{path}: record {n} (id {rec.get('id', '?')}) is not a valid example "
                    f"({_one_line(e)}); fix the line or rerun the stage that wrote it"
                ) from None
    return out


def load_style(run: Run, style_path: str | Path | None = None) -> StyleSpec | None:
    """--style if given, else the style spec the run was generated with, else none."""
    if style_path is None:
        style_path = run.manifest.get("inputs", {}).get("style", {}).get("path")
    return StyleSpec.load(style_path) if style_path else None


def load_decisions(run: Run) -> dict[str, dict[str, Any]]:
    """id -> the last decision recorded for it in review.jsonl (empty when none)."""
    path = run.file(REVIEW_FILE)
    if not path.exists():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(path):
        if rec.get("decision") in DECISIONS and isinstance(rec.get("id"), str):
            out[rec["id"]] = rec
    return out


def unreviewed_count(run: Run) -> int:
    """How many examples under review (deduped.jsonl) have no decision yet."""
    decided = load_decisions(run)
    return sum(
        1
        for path in review_paths(run)
        for rec in read_jsonl(path)
        if (rec.get("id") or content_id(rec.get("messages") or [])) not in decided
    )


def apply_decisions(
    records: Iterable[dict[str, Any]], decisions: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """(kept records, [(rejected record, reason)]): rejected ones are dropped, edited ones get
    the edited messages (same id, meta["review"] = "edit"); undecided ones are kept as they are."""
    kept: list[dict[str, Any]] = []
    dropped: list[tuple[dict[str, Any], str]] = []
    for rec in records:
        d = decisions.get(rec.get("id", ""))
        if d is None:
            kept.append(rec)
        elif d["decision"] == "reject":
            reason = d.get("reason") or "no reason given"
            dropped.append((rec, f"rejected in review: {reason}"))
        elif d["decision"] == "edit" and d.get("messages"):
            kept.append(
                {
                    **rec,
                    "messages": d["messages"],
                    "meta": {**rec.get("meta", {}), "review": "edit"},
                }
            )
        else:
            kept.append({**rec, "meta": {**rec.get("meta", {}), "review": d["decision"]}})
    return kept, dropped


def record_decision(
    run: Run,
    example_id: str,
    decision: str,
    reason: str | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Append one decision line to review.jsonl (fsynced) and return it."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
    row: dict[str, Any] = {"id": example_id, "decision": decision, "reason": reason or None}
    if decision == "edit":
        row["messages"] = messages
    row["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    append_jsonl(run.file(REVIEW_FILE), [row])
    return row


# -- edits ------------------------------------------------------------------------------------
def check_edit(messages: Any, style: StyleSpec | None) -> list[str]:
    """Every reason this edited conversation may not be saved; empty when it may."""
    if isinstance(messages, dict) and "messages" in messages:
        messages = messages["messages"]
    if not isinstance(messages, list) or not messages:
        return ["expected a non-empty list of messages"]
    problems: list[str] = []
    checker = _format_checker()
    if checker is not None:
        found = checker({"messages": messages}) or []
        problems = [_as_text(p) for p in found if _blocks_edit(p)]
        if problems:
            return problems
    try:
        conv = Conversation.model_validate({"messages": messages})
    except ValidationError as e:
        return [_one_line(e)]
    if checker is None:
        if not any(m.role == "assistant" for m in conv.messages):
            problems.append("needs at least one assistant message")
        for i, m in enumerate(conv.messages, 1):
            if m.role in ("system", "user", "assistant") and not m.tool_calls and not m.content:
                problems.append(f"message {i} ({m.role}): empty content")
    if style is not None:
        for i, p in style.check_messages(messages):
            problems.append(f"message {i + 1}: {p}")
    return problems


def _format_checker() -> Any:
    """distill.stages.validate.check_example when that module provides it."""
    try:
        from distill.stages import validate  # type: ignore[attr-defined]
    except ImportError:
        return None
    return getattr(validate, "check_example", None)


def _blocks_edit(problem: Any) -> bool:
    """Format errors block an edit; of the warnings, only an empty message does."""
    return getattr(problem, "severity", "error") == "error" or getattr(problem, "code", "") == (
        "empty-content"
    )


def _as_text(problem: Any) -> str:
    if isinstance(problem, str):
        return problem
    if isinstance(getattr(problem, "code", None), str) and isinstance(
        getattr(problem, "message", None), str
    ):
        return f"{problem.code}: {problem.message}"
        return problem
    if isinstance(problem, tuple):
        return ": ".join(str(x) for x in problem)
    for attr in ("message", "msg", "reason"):
        if isinstance(getattr(problem, attr, None), str):
            return getattr(problem, attr)
    return str(problem)


_ROLE_LINE = re.compile(r"^(" + "|".join(ROLES) + r"):[ \t]?(.*)$")


def format_for_edit(messages: list[dict[str, Any]]) -> str:
    """Plain `role: text` lines when the messages are plain text, else pretty JSON."""
    plain = all(
        set(m) <= {"role", "content"} and isinstance(m.get("content"), str) for m in messages
    )
    if plain and not any(
        _ROLE_LINE.match(line) for m in messages for line in m["content"].splitlines()[1:]
    ):
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n"
    return json.dumps(messages, indent=2, ensure_ascii=False) + "\n"


def parse_edit(text: str) -> list[dict[str, Any]]:
    """Read what `format_for_edit` wrote (either form); EditRefused says which line is wrong."""
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise EditRefused(f"line {e.lineno}: invalid JSON ({e.msg})") from None
        if isinstance(obj, dict) and "messages" in obj:
            obj = obj["messages"]
        if not isinstance(obj, list) or not all(isinstance(m, dict) for m in obj):
            raise EditRefused("expected a JSON list of message objects")
        return obj
    messages: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if m := _ROLE_LINE.match(line):
            messages.append({"role": m.group(1), "content": m.group(2)})
        elif messages:
            messages[-1]["content"] += "\n" + line
        elif line.strip():
            raise EditRefused(f"line {n}: expected 'role: text' (roles: {', '.join(ROLES[:3])})")
    for msg in messages:
        msg["content"] = msg["content"].strip()
    if not messages:
        raise EditRefused("the conversation is empty")
    return messages


def edit_in_editor(messages: list[dict[str, Any]], editor: str) -> list[dict[str, Any]]:
    """Open the messages in the user's $EDITOR (as `format_for_edit` writes them) and parse
    what was saved; EditRefused when the editor fails or the text does not parse."""
    fd, name = tempfile.mkstemp(prefix="distill-review-", suffix=".txt")
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(format_for_edit(messages))
        try:
            code = subprocess.run([*shlex.split(editor), str(path)], check=False).returncode
        except OSError as e:
            raise EditRefused(f"cannot start the editor {editor!r}: {e}") from None
        if code != 0:
            raise EditRefused(f"the editor {editor!r} exited with status {code}; nothing saved")
        return parse_edit(path.read_text(encoding="utf-8"))
    finally:
        path.unlink(missing_ok=True)


# -- flags ------------------------------------------------------------------------------------
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
_DIGIT_RUN = re.compile(r"\+?\(?\d[\d \t().-]{6,}\d")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def pii_flags(text: str) -> list[Flag]:
    """Emails; 13-19 digit numbers passing the Luhn check (cards); other 9-15 digit numbers
    written with optional +, spaces, dots, dashes or brackets (phones)."""
    out = [Flag("pii", f"email {m.group(0)!r}") for m in _EMAIL.finditer(text)]
    for m in _DIGIT_RUN.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            out.append(Flag("pii", f"card number {m.group(0).strip()!r}"))
        elif 9 <= len(digits) <= 15:
            out.append(Flag("pii", f"phone number {m.group(0).strip()!r}"))
    return out


_STOP = {"the", "and", "with", "from", "that", "this", "your", "their", "about", "into", "for"}


def scope_words(style: StyleSpec) -> list[str]:
    """Words that show a reply steers back to the shop: the spec's name and the words of
    scope.description (4+ letters, plural s dropped), minus any that occur in a marker."""
    words = re.findall(r"[a-z]{4,}", (style.scope.description + " " + style.name).lower())
    markers = " ".join(style.scope.off_topic_markers).lower()
    out: list[str] = []
    for w in words:
        stem = w[:-1] if w.endswith("s") and len(w) > 4 else w
        if stem not in _STOP and stem not in markers and stem not in out:
            out.append(stem)
    return out


def off_topic_flags(messages: list[dict[str, Any]], style: StyleSpec) -> list[Flag]:
    """A user turn names one of scope.off_topic_markers and the next assistant reply mentions
    none of the scope's words (it answers instead of steering back to the shop)."""
    markers = style.scope.off_topic_markers
    if not markers:
        return []
    scope = [re.compile(r"\b" + re.escape(w), re.I) for w in scope_words(style)]
    out: list[Flag] = []
    for i, m in enumerate(messages):
        if m.get("role") != "user" or not isinstance(m.get("content"), str):
            continue
        hit = next(
            (k for k in markers if re.search(r"\b" + re.escape(k) + r"\b", m["content"], re.I)),
            None,
        )
        if hit is None:
            continue
        reply = next((r for r in messages[i + 1 :] if r.get("role") == "assistant"), None)
        if reply is None or not isinstance(reply.get("content"), str):
            continue
        if not any(p.search(reply["content"]) for p in scope):
            out.append(
                Flag(
                    "off-topic",
                    f"user asks about {hit!r} (message {i + 1}); the reply does not steer back to the shop",
                )
            )
    return out


def conversation_words(messages: list[dict[str, Any]]) -> int:
    """Words in the user and assistant turns (the system prompt is the same everywhere)."""
    return sum(count_words(m.get("content") or "") for m in messages if m.get("role") != "system")


MIN_FOR_LENGTH = 8


def length_bounds(word_counts: list[int]) -> tuple[float, float] | None:
    """median +- 3 x max(1.4826 x MAD, 20% of the median, 1 word); None under 8 examples."""
    if len(word_counts) < MIN_FOR_LENGTH:
        return None
    med = statistics.median(word_counts)
    mad = statistics.median(abs(x - med) for x in word_counts)
    spread = 3 * max(1.4826 * mad, 0.2 * med, 1.0)
    return med - spread, med + spread


def near_duplicate_info(run: Run, ids: set[str]) -> dict[str, Flag]:
    """From dedupe_report.json's clusters ({"kept", "also_kept", "removed"}) and dedupe rows in
    rejected.jsonl: a flag for each example under review that belongs to a cluster."""
    out: dict[str, Flag] = {}
    report = run.file("dedupe_report.json")
    clusters: list[Any] = []
    if report.exists():
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
            clusters = data.get("clusters", []) if isinstance(data, dict) else []
        except (OSError, json.JSONDecodeError):
            clusters = []
    for n, c in enumerate(clusters if isinstance(clusters, list) else [], 1):
        if not isinstance(c, dict):
            continue
        kept = c.get("kept")
        members = [kept] if isinstance(kept, str) else []
        for key in ("also_kept", "removed", "members"):
            members += [m for m in c.get(key) or [] if isinstance(m, str) and m not in members]
        if len(members) < 2:
            continue
        kind = "exact" if c.get("kind") == "exact" else "near"
        for mid in members:
            if mid in ids:
                others = [x for x in members if x != mid]
                role = "kept" if mid == kept else "member"
                listed = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
                out[mid] = Flag(
                    "near-dup",
                    f"{kind}-duplicate cluster {n}: {len(members)} examples, this one {role}; "
                    f"others: {listed}",
                )
    rejected = run.file("rejected.jsonl")
    if rejected.exists():
        counts: dict[str, int] = {}
        for row in read_jsonl(rejected):
            if row.get("stage") != "dedupe":
                continue
            for rid in re.findall(r"\b[0-9a-f]{16}\b", str(row.get("reason", ""))):
                if rid in ids and rid != row.get("id"):
                    counts[rid] = counts.get(rid, 0) + 1
        for rid, k in counts.items():
            out.setdefault(
                rid, Flag("near-dup", f"dedupe removed {k} near-duplicate(s) of this one")
            )
    return out


# -- the session ------------------------------------------------------------------------------
class ReviewSession:
    """The examples under review, their flags and the decisions so far; `decide` logs one."""

    def __init__(self, run: Run, style: StyleSpec | None = None) -> None:
        self.run = run
        self.style = style
        self.examples = load_examples(run)
        self.by_id = {ex.id: ex for ex in self.examples}
        self.decisions = load_decisions(run)
        self.bounds = length_bounds(
            [conversation_words(self.original_messages(ex.id)) for ex in self.examples]
        )
        self.near_dup = near_duplicate_info(run, set(self.by_id))
        self.flags = {ex.id: self._flags_for(ex.id) for ex in self.examples}

    # what the reviewer sees
    def original_messages(self, example_id: str) -> list[dict[str, Any]]:
        return [m.to_chat() for m in self.by_id[example_id].messages]

    def messages(self, example_id: str) -> list[dict[str, Any]]:
        """The edited messages when the last decision is an edit, else the original."""
        d = self.decisions.get(example_id)
        if d and d["decision"] == "edit" and d.get("messages"):
            return d["messages"]
        return self.original_messages(example_id)

    def status(self, example_id: str) -> str:
        d = self.decisions.get(example_id)
        return STATUS[d["decision"] if d else None]

    def topic(self, example_id: str) -> str:
        return str(self.by_id[example_id].meta.get("topic") or "")

    def topics(self) -> list[str]:
        return sorted({t for ex in self.examples if (t := self.topic(ex.id))})

    def _flags_for(self, example_id: str) -> list[Flag]:
        msgs = self.messages(example_id)
        out: list[Flag] = []
        if self.style is not None:
            out += [
                Flag("style", f"message {i + 1}: {p}") for i, p in self.style.check_messages(msgs)
            ]
        if example_id in self.near_dup:
            out.append(self.near_dup[example_id])
        if self.bounds is not None:
            words, (lo, hi) = conversation_words(msgs), self.bounds
            if words > hi:
                out.append(Flag("length", f"{words} words; most are under {hi:.0f}"))
            elif words < lo:
                out.append(Flag("length", f"{words} words; most are over {lo:.0f}"))
        for m in msgs:
            if m.get("role") != "system" and isinstance(m.get("content"), str):
                out += pii_flags(m["content"])
        if self.style is not None:
            out += off_topic_flags(msgs, self.style)
        return out

    def flag_kinds(self, example_id: str) -> list[str]:
        return list(dict.fromkeys(f.kind for f in self.flags[example_id]))

    # counts and navigation
    @property
    def total(self) -> int:
        return len(self.examples)

    @property
    def reviewed(self) -> int:
        return sum(1 for ex in self.examples if ex.id in self.decisions)

    def counts(self) -> dict[str, int]:
        c = {s: 0 for s in ("accepted", "rejected", "edited", "unreviewed")}
        for ex in self.examples:
            c[self.status(ex.id)] += 1
        c["flagged"] = sum(1 for ex in self.examples if self.flags[ex.id])
        c["total"] = self.total
        return c

    def first_unreviewed(self) -> int | None:
        return next((i for i, ex in enumerate(self.examples) if ex.id not in self.decisions), None)

    def matches(self, example_id: str, filter_: str = "all", search: str = "") -> bool:
        """Whether an example shows under a filter (FILTERS or "topic:NAME") and a search."""
        status = self.status(example_id)
        ok = {
            "all": True,
            "unreviewed": status == "unreviewed",
            "flagged": bool(self.flags[example_id]),
            "accepted": status in ("accepted", "edited"),
            "rejected": status == "rejected",
            "edited": status == "edited",
        }.get(filter_)
        if ok is None:
            ok = filter_.startswith("topic:") and self.topic(example_id) == filter_[6:]
        if ok and search:
            s = search.lower()
            ex = self.by_id[example_id]
            hay = [example_id, json.dumps(ex.meta, ensure_ascii=False)]
            hay += [m.get("content") or "" for m in self.messages(example_id)]
            ok = any(s in h.lower() for h in hay)
        return ok

    # decisions
    def decide(
        self,
        example_id: str,
        decision: str,
        reason: str | None = None,
        messages: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Validate (edits), append to review.jsonl, update flags. EditRefused on a bad edit."""
        if example_id not in self.by_id:
            raise KeyError(example_id)
        if decision == "edit":
            problems = check_edit(messages, self.style)
            if problems:
                raise EditRefused("; ".join(problems))
            messages = Conversation.model_validate({"messages": messages}).to_chat()["messages"]
        row = record_decision(self.run, example_id, decision, reason, messages)
        self.decisions[example_id] = row
        self.flags[example_id] = self._flags_for(example_id)
        return row

    def record_stage(self) -> None:
        c = self.counts()
        self.run.record_stage(
            "review",
            "done" if c["unreviewed"] == 0 else "in-progress",
            **{
                k: c[k]
                for k in ("total", "accepted", "edited", "rejected", "unreviewed", "flagged")
            },
        )


def open_session(run: Run, style_path: str | Path | None = None) -> ReviewSession:
    return ReviewSession(run, load_style(run, style_path))


# -- non-interactive forms --------------------------------------------------------------------
def list_rows(session: ReviewSession, flagged_only: bool = False) -> list[tuple[str, str, str]]:
    """(id, status, comma-separated flag kinds or "-") per example, in file order."""
    return [
        (ex.id, session.status(ex.id), ",".join(session.flag_kinds(ex.id)) or "-")
        for ex in session.examples
        if not flagged_only or session.flags[ex.id]
    ]


def accept_unflagged(session: ReviewSession) -> dict[str, int]:
    """Accept every unflagged example that has no decision yet; flagged ones stay for a person."""
    accepted = flagged = decided = 0
    rows = []
    for ex in session.examples:
        if ex.id in session.decisions:
            decided += 1
        elif session.flags[ex.id]:
            flagged += 1
        else:
            rows.append(ex.id)
    if rows:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        lines = [
            {"id": i, "decision": "accept", "reason": "auto: no flags", "at": now} for i in rows
        ]
        append_jsonl(session.run.file(REVIEW_FILE), lines)
        for line in lines:
            session.decisions[line["id"]] = line
        accepted = len(rows)
    return {"accepted": accepted, "left_flagged": flagged, "already_decided": decided}


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
.ex{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;margin:1em 0}
.ex.rejected{border-color:#c33;background:#fff6f6}.ex.accepted,.ex.edited{border-color:#393}
.meta{color:#555;font-size:.9em}.flag{background:#fde9b8;border-radius:3px;padding:0 .3em}
.msg{white-space:pre-wrap;margin:.3em 0;padding:.3em .6em;border-left:3px solid #ddd}
.role{font-weight:bold;text-transform:uppercase;font-size:.75em;color:#666;display:block}
.assistant{border-color:#393}.user{border-color:#36c}.system{border-color:#999;color:#666}
code{font-size:.9em}
"""


def export_html(session: ReviewSession, path: Path, flagged_only: bool = False) -> int:
    """Write a static, self-contained page of the examples, their flags and decisions;
    every piece of text is HTML-escaped. Returns how many examples it holds."""
    e = html.escape
    c = session.counts()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>distill review: {e(session.run.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Review of run {e(session.run.name)}</h1>",
        f"<p>{session.reviewed} / {session.total} reviewed: {c['accepted']} accepted, "
        f"{c['edited']} edited, {c['rejected']} rejected, {c['unreviewed']} unreviewed; "
        f"{c['flagged']} flagged.</p>",
    ]
    n = 0
    for ex in session.examples:
        flags = session.flags[ex.id]
        if flagged_only and not flags:
            continue
        n += 1
        status = session.status(ex.id)
        d = session.decisions.get(ex.id)
        meta = ", ".join(
            f"{k}: {v}" for k, v in ex.meta.items() if isinstance(v, (str, int, float))
        )
        parts.append(f"<section class='ex {e(status)}' id='{e(ex.id)}'>")
        parts.append(
            f"<div class='meta'><code>{e(ex.id)}</code> · <b>{e(status)}</b> · {e(meta)}</div>"
        )
        if d and d.get("reason"):
            parts.append(f"<div class='meta'>reason: {e(str(d['reason']))}</div>")
        if flags:
            items = "".join(
                f"<li><span class='flag'>{e(f.kind)}</span> {e(f.detail)}</li>" for f in flags
            )
            parts.append(f"<ul>{items}</ul>")
        for m in session.messages(ex.id):
            role = str(m.get("role", "?"))
            body = m.get("content")
            if not isinstance(body, str):
                body = json.dumps({k: v for k, v in m.items() if k != "role"}, ensure_ascii=False)
            parts.append(
                f"<div class='msg {e(role)}'><span class='role'>{e(role)}</span>{e(body)}</div>"
            )
        parts.append("</section>")
    parts.append("</body></html>\n")
    atomic_write_text(Path(path), "\n".join(parts))
    return n


def _one_line(e: Exception) -> str:
    if isinstance(e, ValidationError):
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        if loc.startswith("messages."):
            parts = loc.split(".")
            if len(parts) >= 2 and parts[1].isdigit():
                parts[1] = str(int(parts[1]) + 1)
                loc = "message " + ".".join(parts[1:])
        return f"{loc}: {err['msg']}" if loc else err["msg"]
    return str(e).splitlines()[0] if str(e) else type(e).__name__
