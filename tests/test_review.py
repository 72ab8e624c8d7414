"""Review without the UI: flags, the decisions log, edits, and the non-interactive forms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.cli import cli
from distill.records import Example
from distill.runs import Run, atomic_write_json, atomic_write_jsonl
from distill.stages import review as rv
from distill.style import StyleSpec

ROOT = Path(__file__).resolve().parent.parent
STYLE = ROOT / "seeds" / "greenleaf.style.toml"
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."


def example(user: str, reply: str, **meta) -> dict:
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user},
        {"role": "assistant", "content": reply},
    ]
    return Example(messages=messages, meta=meta).to_record()


CLEAN = [
    example(
        f"Where is my order GL-1000{i}? It is late.",
        f"Sorry for the wait! I've checked GL-1000{i} and it ships today with tracking.",
        topic="late order",
    )
    for i in range(8)
]
PII = example("Reach me at ann@example.com please.", "Thanks Ann! I'll email you the link now.")
OFF_TOPIC = example(
    "Can you give me a soup recipe?",
    "Sure! Just simmer carrots and onions in stock, then blend it smooth.",
)
HOSTILE = example(
    "Hi <script>alert('x')</script> & bye",
    "Thanks! I'll check that <b>now</b> for you.",
)


@pytest.fixture
def run(tmp_path) -> Run:
    r = Run.create("rev", outputs=tmp_path / "outputs")
    r.update_manifest(inputs={"style": {"path": str(STYLE)}})
    atomic_write_jsonl(r.file("generated.jsonl"), [*CLEAN, PII, OFF_TOPIC])
    return r


@pytest.fixture
def style() -> StyleSpec:
    return StyleSpec.load(STYLE)


def invoke(run: Run, *args: str):
    return CliRunner().invoke(cli, ["review", "--run", str(run.path), *args])


def log(run: Run) -> list[dict]:
    p = run.file("review.jsonl")
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


# -- the decisions log ---------------------------------------------------------------------
def test_last_decision_wins_and_unreviewed_count_follows(run):
    a, b = CLEAN[0]["id"], CLEAN[1]["id"]
    rv.record_decision(run, a, "reject", "bad")
    rv.record_decision(run, a, "accept")
    rv.record_decision(run, b, "reject", "off voice")
    d = rv.load_decisions(run)
    assert d[a]["decision"] == "accept" and d[b]["reason"] == "off voice"
    assert rv.unreviewed_count(run) == 10 - 2


def test_a_partial_last_line_from_a_kill_is_ignored_and_repaired(run):
    rv.record_decision(run, CLEAN[0]["id"], "accept")
    with open(run.file("review.jsonl"), "a") as f:
        f.write('{"id": "' + CLEAN[1]["id"] + '", "decis')  # killed mid-write
    assert set(rv.load_decisions(run)) == {CLEAN[0]["id"]}
    rv.record_decision(run, CLEAN[2]["id"], "accept")
    assert set(rv.load_decisions(run)) == {CLEAN[0]["id"], CLEAN[2]["id"]}


def test_deduped_is_reviewed_when_it_exists(run):
    atomic_write_jsonl(run.file("deduped.jsonl"), CLEAN[:3])
    assert rv.unreviewed_count(run) == 3
    assert [ex.id for ex in rv.load_examples(run)] == [r["id"] for r in CLEAN[:3]]


def test_no_examples_is_an_error_that_says_what_to_run(tmp_path):
    r = Run.create("empty", outputs=tmp_path / "outputs")
    result = CliRunner().invoke(cli, ["review", "--run", str(r.path), "--list"])
    assert result.exit_code == 1
    assert "distill generate" in result.output and "Traceback" not in result.output


def test_apply_decisions_drops_rejected_and_uses_edits():
    a, b, c = CLEAN[0], CLEAN[1], CLEAN[2]
    edited = [*a["messages"][:2], {"role": "assistant", "content": "Sorry! I've sent it."}]
    decisions = {
        a["id"]: {"id": a["id"], "decision": "edit", "messages": edited},
        b["id"]: {"id": b["id"], "decision": "reject", "reason": "dull"},
    }
    kept, dropped = rv.apply_decisions([a, b, c], decisions)
    assert [k["id"] for k in kept] == [a["id"], c["id"]]
    assert kept[0]["messages"] == edited and kept[1]["messages"] == c["messages"]
    assert dropped == [(b, "rejected in review: dull")]


# -- flags ---------------------------------------------------------------------------------
def test_pii_emails_phones_and_luhn_checked_cards():
    kinds = [f.detail.split(" '")[0] for f in rv.pii_flags("mail bob.s@shop.co.uk now")]
    assert kinds == ["email"]
    assert rv.pii_flags("call me on +44 7700 900123")[0].detail.startswith("phone")
    assert rv.pii_flags("card 4111 1111 1111 1111 exp 04/27")[0].detail.startswith("card")
    # fails the Luhn check and is too long for a phone number: not flagged
    assert rv.pii_flags("ref 4111 1111 1111 1112") == []
    # order numbers, dates, prices are not PII
    assert rv.pii_flags("order GL-48213 on 2024-05-01 cost 12.50") == []


def test_off_topic_reply_is_flagged_but_a_redirect_is_not(style):
    def msgs(user, reply):
        return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]

    flags = rv.off_topic_flags(msgs("Any soup recipe?", "Sure, simmer carrots."), style)
    assert [f.kind for f in flags] == ["off-topic"] and "recipe" in flags[0].detail
    redirect = "Sorry, I can only help with GreenLeaf orders and plant care."
    assert rv.off_topic_flags(msgs("Any soup recipe?", redirect), style) == []
    # "return" is in the scope but also in the marker "tax return": it does not count
    tax = msgs("Help with my tax return?", "Sure! File your return online.")
    assert [f.kind for f in rv.off_topic_flags(tax, style)] == ["off-topic"]


def test_session_flags_style_pii_off_topic_length_and_near_duplicates(run, style):
    long_reply = "Thanks! " + " ".join(["I'll check the parcel and send the tracking"] * 10) + "."
    long = example("Where is my parcel? It is late.", long_reply, topic="late order")
    atomic_write_jsonl(run.file("generated.jsonl"), [*CLEAN, PII, OFF_TOPIC, long])
    atomic_write_json(
        run.file("dedupe_report.json"),
        {"clusters": [{"kept": CLEAN[0]["id"], "removed": ["0123456789abcdef"]}]},
    )
    s = rv.open_session(run)
    assert s.style is not None  # from the manifest
    kinds = {ex.id: s.flag_kinds(ex.id) for ex in s.examples}
    assert kinds[CLEAN[0]["id"]] == ["near-dup"]
    assert all(kinds[r["id"]] == [] for r in CLEAN[1:])
    assert kinds[PII["id"]] == ["pii"]
    assert kinds[OFF_TOPIC["id"]] == ["off-topic"]
    assert set(kinds[long["id"]]) == {"style", "length"}  # too-long reply, word-count outlier


def test_missing_or_malformed_dedupe_report_is_harmless(run):
    run.file("dedupe_report.json").write_text("{not json")
    s = rv.open_session(run)
    assert s.flag_kinds(CLEAN[0]["id"]) == []


def test_dedupe_rejections_naming_a_kept_example_flag_it(run):
    gone = example("Where is my order GL-10000? Late!", "Sorry! I've checked it.")
    run.reject([(gone, "dedupe", f"near duplicate of {CLEAN[0]['id']} (jaccard 0.91)")])
    s = rv.open_session(run)
    assert s.flag_kinds(CLEAN[0]["id"]) == ["near-dup"]


def test_no_style_spec_means_no_style_flags(tmp_path):
    r = Run.create("nostyle", outputs=tmp_path / "outputs")
    atomic_write_jsonl(r.file("generated.jsonl"), [OFF_TOPIC, example("hi", "**bold** reply")])
    s = rv.open_session(r)
    assert s.style is None
    assert all(s.flags[ex.id] == [] for ex in s.examples)


# -- edits ---------------------------------------------------------------------------------
def test_edit_text_round_trips_and_json_is_used_when_needed():
    msgs = CLEAN[0]["messages"]
    text = rv.format_for_edit(msgs)
    assert text.startswith("system: ") and rv.parse_edit(text) == msgs
    multi = [{"role": "user", "content": "line one\nuser: not a new turn"}]
    assert rv.format_for_edit(multi).lstrip().startswith("[")
    assert rv.parse_edit(rv.format_for_edit(multi)) == multi
    with pytest.raises(rv.EditRefused, match="line 1"):
        rv.parse_edit("hello there\nuser: hi")


def test_session_refuses_an_invalid_edit_and_writes_nothing(run):
    s = rv.open_session(run)
    ex_id = CLEAN[0]["id"]
    bad = [*CLEAN[0]["messages"][:2], {"role": "assistant", "content": "As an AI, **no**."}]
    with pytest.raises(rv.EditRefused, match="no-ai-talk"):
        s.decide(ex_id, "edit", messages=bad)
    with pytest.raises(rv.EditRefused):
        s.decide(ex_id, "edit", messages=[{"role": "user", "content": "only a question"}])
    assert log(run) == []
    good = [*CLEAN[0]["messages"][:2], {"role": "assistant", "content": "Sorry! I've sent it."}]
    s.decide(ex_id, "edit", messages=good)
    assert log(run)[0]["messages"] == good and s.messages(ex_id) == good


# -- the command ---------------------------------------------------------------------------
def test_list_and_list_flagged(run):
    rv.record_decision(run, CLEAN[0]["id"], "reject", "dull")
    result = invoke(run, "--list")
    assert result.exit_code == 0, result.output
    lines = [x.split("\t") for x in result.stdout.splitlines()]
    assert len(lines) == 10
    assert lines[0] == [CLEAN[0]["id"], "rejected", "-"]
    assert lines[8] == [PII["id"], "unreviewed", "pii"]
    flagged = invoke(run, "--list", "--flagged").stdout.splitlines()
    assert [x.split("\t")[0] for x in flagged] == [PII["id"], OFF_TOPIC["id"]]
    assert "1 / 10 reviewed" in invoke(run, "--list").stderr


def test_accept_unflagged_accepts_only_unflagged_undecided_examples(run):
    rv.record_decision(run, CLEAN[0]["id"], "reject", "dull")
    result = invoke(run, "--accept-unflagged")
    assert result.exit_code == 0, result.output
    assert "accepted 7 unflagged" in result.stdout and "2 flagged" in result.stdout
    d = rv.load_decisions(run)
    assert d[CLEAN[0]["id"]]["decision"] == "reject"  # an earlier decision stands
    assert {i for i, x in d.items() if x["decision"] == "accept"} == {r["id"] for r in CLEAN[1:]}
    assert rv.unreviewed_count(run) == 2
    again = invoke(run, "--accept-unflagged")
    assert "accepted 0 unflagged" in again.stdout and len(log(run)) == 8
    assert run.stage("review")["unreviewed"] == 2


def test_export_escapes_every_text(run, tmp_path):
    atomic_write_jsonl(run.file("generated.jsonl"), [*CLEAN, HOSTILE])
    rv.record_decision(run, HOSTILE["id"], "reject", "<img src=x onerror=alert(1)>")
    out = tmp_path / "review.html"
    result = invoke(run, "--export", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<script>" not in page and "<b>now</b>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; bye" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.count("<section") == 9 and "1 / 9 reviewed" in page


def test_export_flagged_only(run, tmp_path):
    out = tmp_path / "flagged.html"
    assert invoke(run, "--export", str(out), "--flagged").exit_code == 0
    page = out.read_text()
    assert page.count("<section") == 2 and "ann@example.com" in page


def test_interactive_without_a_terminal_refuses_and_names_the_flags(run):
    result = invoke(run)
    assert result.exit_code == 2
    assert "--list" in result.stderr and "--accept-unflagged" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert log(run) == []


def test_flagged_alone_is_a_usage_error(run):
    result = invoke(run, "--flagged")
    assert result.exit_code == 2 and "--list" in result.stderr


def test_style_flag_overrides_the_manifest(run, tmp_path):
    loose = tmp_path / "loose.style.toml"
    loose.write_text(f'name = "loose"\nsystem_prompt = "{SYSTEM}"\n')
    atomic_write_jsonl(run.file("generated.jsonl"), [example("hi", "**bold** reply, as an AI")])
    assert invoke(run, "--list").stdout.split("\t")[2].strip() == "style"
    assert invoke(run, "--list", "--style", str(loose)).stdout.split("\t")[2].strip() == "-"


def test_edit_in_a_real_external_editor(tmp_path):
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "p.write_text(p.read_text().replace('ships today', 'ships tomorrow'))\n"
    )
    import sys

    msgs = CLEAN[0]["messages"]
    out = rv.edit_in_editor(msgs, f"{sys.executable} {editor}")
    assert out[:2] == msgs[:2] and "ships tomorrow" in out[2]["content"]
    with pytest.raises(rv.EditRefused, match="exited with status 3"):
        rv.edit_in_editor(msgs, f"{sys.executable} -c 'raise SystemExit(3)'")
    with pytest.raises(rv.EditRefused, match="cannot start"):
        rv.edit_in_editor(msgs, str(tmp_path / "no-such-editor"))


def test_near_duplicate_flag_from_a_real_dedupe_run(tmp_path):
    pytest.importorskip("distill.stages.dedupe")
    late = "My order GL-48213 is late, where is it? I ordered a monstera last week"
    reply = (
        "Sorry about the wait! I've checked GL-48213 and it ships today; tracking is on its way."
    )
    a, b = example(late + ".", reply), example(late + "!", reply)
    other = example(
        "How often should I water a snake plant?", "Great question! Water it every three weeks."
    )
    r = Run.create("dd", outputs=tmp_path / "outputs")
    atomic_write_jsonl(r.file("generated.jsonl"), [a, b, other])
    dedupe = CliRunner().invoke(cli, ["dedupe", "--run", str(r.path)])
    assert dedupe.exit_code == 0, dedupe.output
    rows = [x.split("\t") for x in invoke(r, "--list").stdout.splitlines()]
    assert rows == [[a["id"], "unreviewed", "near-dup"], [other["id"], "unreviewed", "-"]]
    detail = rv.open_session(r).flags[a["id"]][0].detail
    assert b["id"] in detail and "kept" in detail


def test_without_textual_the_ui_names_the_extra_and_scripts_still_work(run, monkeypatch):
    import importlib
    import sys

    from distill.errors import MissingExtra

    monkeypatch.setitem(sys.modules, "textual", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "distill.review_app", raising=False)
    with pytest.raises(MissingExtra, match=r"pip install 'distill\[review\]'"):
        importlib.import_module("distill.review_app")
    result = invoke(run, "--list")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 10
