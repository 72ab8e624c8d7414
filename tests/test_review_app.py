"""The review TUI driven by keys through textual's Pilot: every decision lands in review.jsonl."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("textual")

from distill.records import Example  # noqa: E402
from distill.runs import Run, atomic_write_jsonl  # noqa: E402
from distill.stages.review import open_session  # noqa: E402

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


RECORDS = [
    example(
        "Where is my order GL-10001?",
        "Sorry for the wait! I've checked and it ships today.",
        topic="late order",
    ),
    example(
        "My fern arrived broken.",
        "Oh no, sorry! I'll send a replacement fern today.",
        topic="damaged plant on arrival",
    ),
    example(
        "How often do I water a cactus?",
        "Great question! Water it every three weeks.",
        topic="watering advice",
    ),
    example(
        "Contact me at ann@example.com",
        "Thanks Ann! I'll email you the tracking link now.",
        topic="late order",
    ),
]


@pytest.fixture
def run(tmp_path) -> Run:
    r = Run.create("rev", outputs=tmp_path / "outputs")
    r.update_manifest(inputs={"style": {"path": str(STYLE)}})
    atomic_write_jsonl(r.file("generated.jsonl"), RECORDS)
    return r


def decisions(run: Run) -> list[dict]:
    path = run.file("review.jsonl")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def keys(text: str) -> list[str]:
    """Key names that type `text` into an input."""
    return ["space" if ch == " " else ch for ch in text]


def drive(run: Run, *steps):
    """Run the app headless; each step is a key name, or a callable(app) to look or act."""
    from distill.review_app import ReviewApp

    app = ReviewApp(open_session(run))

    async def go():
        async with app.run_test(size=(140, 40)) as pilot:
            await pilot.pause()
            for step in steps:
                if callable(step):
                    step(app)
                else:
                    await pilot.press(step)
                await pilot.pause()
        return app

    return asyncio.run(go())


def current(app) -> str | None:
    return app.screen.current_id


def counter(app) -> str:
    return str(app.screen.query_one("#counter").render())


def set_editor(text: str):
    def act(app):
        from textual.widgets import TextArea

        app.screen.query_one("#editor", TextArea).load_text(text)

    return act


def test_accept_and_reject_with_reason_are_logged_as_made(run):
    seen = {}

    def look(app):
        seen["first"] = current(app)
        seen["counter"] = counter(app)

    def look_after(app):
        seen["after"] = counter(app)
        seen["now"] = current(app)

    drive(run, look, "a", "r", *keys("too short"), "enter", look_after, "q")
    assert seen["first"] == RECORDS[0]["id"]
    assert "0 / 4 reviewed" in seen["counter"]
    assert "2 / 4 reviewed" in seen["after"]
    assert seen["now"] == RECORDS[2]["id"]  # the cursor moved on after each decision
    assert [(r["id"], r["decision"], r["reason"]) for r in decisions(run)] == [
        (RECORDS[0]["id"], "accept", None),
        (RECORDS[1]["id"], "reject", "too short"),
    ]


def test_reject_cancelled_with_escape_writes_nothing(run):
    drive(run, "r", *keys("hmm"), "escape", "q")
    assert decisions(run) == []


def test_reject_without_reason(run):
    drive(run, "n", "r", "enter", "q")
    assert [(r["id"], r["decision"], r["reason"]) for r in decisions(run)] == [
        (RECORDS[1]["id"], "reject", None)
    ]


GOOD_EDIT = f"""system: {SYSTEM}

user: Where is my order GL-10001?

assistant: Sorry for the wait! I've checked GL-10001 and it ships tomorrow.
"""


def test_valid_edit_is_saved_with_the_new_messages(run):
    seen = {}

    def look(app):
        seen["view"] = str(app.screen.query_one("#view").render())

    drive(run, "e", set_editor(GOOD_EDIT), "ctrl+s", "p", look, "q")
    rows = decisions(run)
    assert len(rows) == 1
    assert rows[0]["id"] == RECORDS[0]["id"] and rows[0]["decision"] == "edit"
    assert rows[0]["messages"][-1] == {
        "role": "assistant",
        "content": "Sorry for the wait! I've checked GL-10001 and it ships tomorrow.",
    }
    assert "ships tomorrow" in seen["view"] and "edited" in seen["view"]


@pytest.mark.parametrize(
    "text, reason",
    [
        (GOOD_EDIT.replace("Sorry for the wait!", "**Sorry** for the wait!"), "no-markdown"),
        ("robot: hello\n" + GOOD_EDIT, "expected 'role: text'"),
        ('[{"role": "robot", "content": "hi"}]', "robot"),
        (f"system: {SYSTEM}\n\nuser: Where is my order?\n", "assistant"),
        ('[{"role": "user", "content": "hi"}', "invalid JSON"),
    ],
    ids=["style", "bad-line", "bad-role", "no-assistant", "bad-json"],
)
def test_invalid_edit_is_refused_with_the_reason_and_nothing_is_written(run, text, reason):
    seen = {}

    def look(app):
        seen["screen"] = type(app.screen).__name__
        seen["error"] = str(app.screen.query_one("#edit-error").render())

    drive(run, "e", set_editor(text), "ctrl+s", look, "escape", "q")
    assert seen["screen"] == "EditScreen"  # still editing: the edit was not taken
    assert "Refused" in seen["error"] and reason in seen["error"]
    assert decisions(run) == []


def test_edit_unchanged_writes_nothing(run):
    drive(run, "e", "ctrl+s", "q")
    assert decisions(run) == []


def test_filters_cycle_through_unreviewed_flagged_and_topics(run):
    seen = []

    def look(app):
        seen.append((app.screen.filter_name, list(app.screen.shown), counter(app)))

    ids = [r["id"] for r in RECORDS]
    drive(run, "a", "f", look, "f", look, "f", look, "f", "f", "f", look, "q")
    (f1, s1, c1), (f2, s2, _), (f3, s3, _), (f4, s4, _) = seen
    assert f1 == "unreviewed" and s1 == ids[1:] and "filter: unreviewed" in c1
    assert f2 == "flagged" and s2 == [ids[3]]  # the email address
    assert f3 == "accepted" and s3 == [ids[0]]
    assert f4 == "topic:damaged plant on arrival" and s4 == [ids[1]]


def test_search_narrows_the_list(run):
    seen = {}

    def look(app):
        seen["shown"] = list(app.screen.shown)
        seen["current"] = current(app)

    drive(run, "slash", *keys("cactus"), "enter", look, "q")
    assert seen["shown"] == [RECORDS[2]["id"]] == [seen["current"]]


def test_quit_and_reopen_resumes_at_the_first_unreviewed(run):
    drive(run, "a", "a", "q")
    seen = {}
    drive(run, lambda app: seen.update(now=current(app), counter=counter(app)), "q")
    assert seen["now"] == RECORDS[2]["id"]
    assert "2 / 4 reviewed" in seen["counter"]
    assert [r["decision"] for r in decisions(run)] == ["accept", "accept"]


def test_next_previous_and_jump_to_unreviewed(run):
    seen = []

    def look(app):
        seen.append(current(app))

    ids = [r["id"] for r in RECORDS]
    # accept #3 out of order, then from #2 `u` skips the reviewed #3 to #4
    drive(run, "n", "n", "a", look, "p", "p", look, "n", "u", look, "u", look, "q")
    assert seen == [ids[3], ids[1], ids[3], ids[0]]


def test_shift_e_edits_in_the_users_editor(run, tmp_path, monkeypatch):
    import contextlib
    import sys

    from distill.review_app import ReviewApp

    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "p.write_text(p.read_text().replace('ships today', 'ships on Monday'))\n"
    )
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    # a headless test terminal cannot be suspended; a real one is
    monkeypatch.setattr(ReviewApp, "suspend", lambda self: contextlib.nullcontext())
    drive(run, "E", "q")
    rows = decisions(run)
    assert [(r["id"], r["decision"]) for r in rows] == [(RECORDS[0]["id"], "edit")]
    assert "ships on Monday" in rows[0]["messages"][-1]["content"]


def test_a_real_terminal_session_killed_mid_review_keeps_every_decision(run):
    """`distill review` in a pseudo-terminal: accept, reject with a reason, then SIGKILL."""
    pty = pytest.importorskip("pty")
    import os
    import select
    import signal
    import subprocess
    import sys
    import time

    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    cmd = [sys.executable, "-m", "distill", "review", "--run", str(run.path)]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)

    def wait_for(check, what: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < end:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
            if check(seen):
                return
        proc.kill()
        raise AssertionError(f"timed out waiting for {what}: {seen[-500:]!r}")

    try:
        wait_for(lambda out: b"reviewed" in out, "the counter")
        os.write(master, b"a")
        wait_for(lambda _: len(decisions(run)) == 1, "the accept")
        os.write(master, b"r")
        wait_for(lambda out: b"Reason" in out, "the reason prompt")
        os.write(master, b"dull\r")
        wait_for(lambda _: len(decisions(run)) == 2, "the reject")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        os.close(master)
    assert [(r["id"], r["decision"], r["reason"]) for r in decisions(run)] == [
        (RECORDS[0]["id"], "accept", None),
        (RECORDS[1]["id"], "reject", "dull"),
    ]
    assert open_session(run).first_unreviewed() == 2


def test_j_and_k_scroll_a_long_conversation(tmp_path):
    turns = []
    for i in range(12):
        turns += [
            {"role": "user", "content": f"Question {i}: where is order GL-{10000 + i}?"},
            {
                "role": "assistant",
                "content": f"Thanks! I've checked GL-{10000 + i}; it ships today.",
            },
        ]
    rec = Example(messages=[{"role": "system", "content": SYSTEM}, *turns]).to_record()
    r = Run.create("long", outputs=tmp_path / "outputs")
    atomic_write_jsonl(r.file("generated.jsonl"), [rec])
    ys = []

    def look(app):
        ys.append(app.screen.query_one("#view-scroll").scroll_y)

    drive(r, look, "j", "j", look, "k", look, "q")
    assert ys[0] == 0 and ys[1] == 8 and ys[2] == 4
