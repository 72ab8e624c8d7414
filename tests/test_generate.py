"""`distill generate` with a fake teacher: the plan, re-asks, rejections, resume, the CLI."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.backends import FakeBackend
from distill.cli import cli
from distill.runs import read_jsonl
from distill.stages.generate import (
    ConversationTypes,
    GenerateOptions,
    Seed,
    build_messages,
    generate,
    make_plan,
)
from distill.style import Axes

ROOT = Path(__file__).resolve().parent.parent
STYLE = ROOT / "seeds" / "greenleaf.style.toml"
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."

SEEDS = [
    (
        "My order GL-48213 is three days late.",
        "So sorry for the wait! I've chased it and you'll have tracking within the hour.",
    ),
    (
        "How often should I water my monstera?",
        "Great question! Water it when the top few centimetres of soil are dry, about once a week.",
    ),
    (
        "The pot arrived cracked.",
        "Oh no, sorry about that! I've sent a free replacement pot, it ships tomorrow.",
    ),
]


@pytest.fixture
def seeds_file(tmp_path) -> Path:
    """A seeds file with its style spec next to it (the default --style)."""
    path = tmp_path / "shop.jsonl"
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": u},
                    {"role": "assistant", "content": a},
                ]
            }
        )
        for u, a in SEEDS
    ]
    path.write_text("\n".join(lines) + "\n")
    (tmp_path / "shop.style.toml").write_text(STYLE.read_text())
    return path


def point_of(messages) -> dict:
    """The plan point a generate prompt asks for (read back from the prompt text)."""
    prompt = messages[1]["content"]
    get = lambda key: re.search(rf"- {key}: (.*)", prompt).group(1).strip()  # noqa: E731
    turns = int(re.search(r"Exactly (\d+) exchange", prompt).group(1))
    return {"topic": get("Topic"), "persona": get("The customer"), "turns": turns}


REPLIES = [
    "Happy to help with your {topic} question! I've sorted it; expect an email within the hour.",
    "Thanks for waiting! Just reply here with a photo and we'll take it from there today.",
    "Of course! You can change it under My account, and I've added a note for the team.",
]


def good_answer(messages) -> dict:
    """A valid conversation for whatever point is asked, unique per prompt."""
    p = point_of(messages)
    tag = abs(hash(messages[1]["content"])) % 10_000
    return {
        "exchanges": [
            {
                "user": f"Hi, question about {p['topic']} from a {p['persona']} ({tag}-{i})",
                "assistant": REPLIES[i].format(topic=p["topic"]) + f" Ref {tag}.",
            }
            for i in range(p["turns"])
        ]
    }


def opts(seeds_file: Path, **kw) -> GenerateOptions:
    base = dict(seeds=seeds_file, n=12, teacher="fake:teacher", concurrency=4)
    base.update(kw)
    return GenerateOptions(**base)


def run_files(name: str = "shop") -> tuple[list[dict], list[dict], dict]:
    root = Path("outputs") / name
    gen = list(read_jsonl(root / "generated.jsonl")) if (root / "generated.jsonl").exists() else []
    rej = list(read_jsonl(root / "rejected.jsonl")) if (root / "rejected.jsonl").exists() else []
    return gen, rej, json.loads((root / "manifest.json").read_text())


# -- the plan -----------------------------------------------------------------------------
def test_plan_covers_every_axis_evenly_and_is_deterministic(style):
    plan = make_plan(style.axes, 140, seed=7)
    for axis, values in (("topic", style.axes.topics), ("persona", style.axes.personas)):
        counts = Counter(getattr(p, axis) for p in plan)
        assert set(counts) == set(values)
        assert max(counts.values()) - min(counts.values()) <= 1
    turns = Counter(p.turns for p in plan)  # [1, 1, 2, 3]: weights by repetition
    assert turns[1] == 70 and turns[2] == 35 and turns[3] == 35
    assert make_plan(style.axes, 140, seed=7) == plan
    assert make_plan(style.axes, 140, seed=8) != plan
    assert make_plan(style.axes, 60, seed=7) == plan[:60]  # growing --n keeps the done points


def test_prompt_shows_the_closest_seed_first_and_rotates_the_rest(style):
    seeds = [Seed([{"user": u, "assistant": a}], f"{u} {a}") for u, a in SEEDS]
    plan = make_plan(Axes(topics=["water schedule"], personas=["p"], intents=["i"]), 3)
    msgs, shown = build_messages(style, seeds, plan[0], 2)
    assert shown[0].exchanges[0]["user"].startswith("How often should I water")
    assert "water schedule" in msgs[1]["content"]
    others = {build_messages(style, seeds, p, 2)[1][1].text for p in plan}
    assert len(others) >= 2  # the second example rotates with the plan index


# -- the output type ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "exchanges, problem",
    [
        ([{"user": "hi", "assistant": "Sorry! I've refunded it."}] * 2, "at most 1"),
        (
            [{"user": "Where?", "assistant": "**Sorry!** I've refunded it, check your email."}],
            "no-markdown",
        ),
        ([{"user": "Where?", "assistant": "Sorry, where is my order? I will wait."}], "role-swap"),
        (
            [
                {
                    "user": "How can I help you today?",
                    "assistant": "Thanks! I'll order one, please send it.",
                }
            ],
            "role-swap",
        ),
        ([{"user": "Where?", "assistant": "The parcel is at the depot."}], "warm-opening"),
        (
            [
                {
                    "user": "The customer asks about a refund.",
                    "assistant": "Sorry! I've refunded it.",
                }
            ],
            "narrates",
        ),
    ],
)
def test_conversation_type_carries_the_style_rules(style, exchanges, problem):
    from pydantic import ValidationError

    model = ConversationTypes(style).get(1)
    with pytest.raises(ValidationError, match=problem):
        model.model_validate({"exchanges": exchanges})


def test_topic_check_rejects_a_chat_about_something_else(style):
    from pydantic import ValidationError

    model = ConversationTypes(style, topic_check=True).get(1, "watering advice")
    ok = {
        "user": "How much water?",
        "assistant": "Great question! Water it weekly, just check the soil first.",
    }
    model.model_validate({"exchanges": [ok]})
    off = {"user": "Where is the parcel?", "assistant": "Sorry! I've chased the courier for you."}
    with pytest.raises(ValidationError, match="off-topic"):
        model.model_validate({"exchanges": [off]})


# -- generation ---------------------------------------------------------------------------
def test_generates_n_examples_with_system_prompt_and_plan_meta(seeds_file):
    teacher = FakeBackend(default=good_answer)
    result = generate(opts(seeds_file), backend=teacher)
    gen, rej, manifest = run_files()
    assert len(gen) == 12 and not rej
    assert result.progress.generated == 12
    for rec in gen:
        assert rec["messages"][0] == {"role": "system", "content": SYSTEM}
        assert len(rec["messages"]) == 1 + 2 * rec["meta"]["turns"]
        assert {"topic", "persona", "intent", "turns", "plan_index"} <= set(rec["meta"])
    assert sorted(r["meta"]["plan_index"] for r in gen) == list(range(12))
    assert len({r["id"] for r in gen}) == 12
    # what other stages rely on
    assert manifest["inputs"]["seeds"]["path"] == str(seeds_file.resolve())
    assert manifest["inputs"]["style"]["path"].endswith("shop.style.toml")
    assert set(manifest["inputs"]["prompts"]) >= {"generate", "reask", "teacher_system"}
    assert manifest["stages"]["generate"]["status"] == "done"
    assert manifest["stages"]["generate"]["counts"]["generated"] == 12
    assert len(manifest["plan"]) == 12 and manifest["config"]["teacher"] == "fake:fake"
    assert (Path("outputs") / "shop" / "calls.sqlite").exists()


def test_a_reply_that_breaks_the_voice_is_reasked_with_the_reason(seeds_file):
    bad = {
        "exchanges": [{"user": "Where is it?", "assistant": "It is at the depot. **Tomorrow.**"}]
    }
    calls = {"n": 0}

    def answer(messages):
        calls["n"] += 1
        if calls["n"] == 1:
            return {"exchanges": bad["exchanges"] * point_of(messages)["turns"]}
        return good_answer(messages)

    teacher = FakeBackend(default=answer)
    generate(opts(seeds_file, n=1, concurrency=1), backend=teacher)
    gen, rej, _ = run_files()
    assert len(gen) == 1 and not rej
    assert gen[0]["meta"]["attempts"] == 2
    reask = teacher.requests[1]
    assert reask[-2]["role"] == "assistant" and "**Tomorrow.**" in reask[-2]["content"]
    assert "rejected" in reask[-1]["content"] and "warm-opening" in reask[-1]["content"]


def test_what_still_fails_after_the_reasks_goes_to_rejected_with_the_message(seeds_file):
    fails = iter([True, True])  # the first point's ask and re-ask break the voice
    teacher = FakeBackend(default=lambda m: _bad_chat(m) if next(fails, False) else good_answer(m))
    generate(opts(seeds_file, n=3, max_reasks=1, concurrency=1), backend=teacher)
    gen, rej, manifest = run_files()
    assert len(gen) == 3 and len(rej) == 1  # the next point of the plan replaced it
    assert len(teacher.requests) == 2 + 3
    for row in rej:
        assert row["stage"] == "generate"
        assert "invalid after 2 attempt(s)" in row["reason"] and "warm-opening" in row["reason"]
        assert "**Tomorrow.**" in row["example"]["meta"]["raw"]
    assert manifest["stages"]["generate"]["counts"]["rejected"] == 1


def test_copying_a_shown_seed_is_reasked(seeds_file):
    copy = {"exchanges": [{"user": SEEDS[0][0], "assistant": SEEDS[0][1]}]}
    answers = [copy, copy, copy]
    teacher = FakeBackend(default=lambda m: answers.pop() if answers else good_answer(m))
    generate(opts(seeds_file, n=1, concurrency=1, max_reasks=1), backend=teacher)
    gen, rej, _ = run_files()
    # the first point may ask for more than one exchange; either way no copy is accepted
    assert all(SEEDS[0][0] not in json.dumps(r) for r in gen)
    assert len(gen) == 1


def test_rerun_sends_nothing_again_and_growing_n_only_does_the_new_points(seeds_file):
    generate(opts(seeds_file, n=8), backend=FakeBackend(default=good_answer))
    again = FakeBackend(default=good_answer)
    result = generate(opts(seeds_file, n=8), backend=again)
    assert again.requests == [] and result.progress.generated == 8
    more = FakeBackend(default=good_answer)
    generate(opts(seeds_file, n=11), backend=more)
    gen, rej, _ = run_files()
    assert len(more.requests) == 3
    assert sorted(r["meta"]["plan_index"] for r in gen) == list(range(11))


def test_resume_after_a_crash_reuses_finished_calls_from_calls_sqlite(seeds_file):
    """Calls finished before a crash (in calls.sqlite but not yet in generated.jsonl) are
    replayed from the cache, not re-sent."""
    generate(opts(seeds_file, n=6), backend=FakeBackend(default=good_answer))
    out = Path("outputs") / "shop"
    (out / "generated.jsonl").write_text("")  # as if killed before any line was written
    again = FakeBackend(default=good_answer)
    result = generate(opts(seeds_file, n=6), backend=again)
    assert again.requests == [] and result.progress.cached == 6
    assert len(run_files()[0]) == 6


def test_a_different_seed_on_an_existing_run_is_refused(seeds_file):
    generate(opts(seeds_file, n=2), backend=FakeBackend(default=good_answer))
    from distill.errors import RunError

    with pytest.raises(RunError, match="--seed 0"):
        generate(opts(seeds_file, n=2, seed=1), backend=FakeBackend(default=good_answer))


def test_spec_without_axes_asks_the_teacher_once_and_records_them(seeds_file, tmp_path):
    text = STYLE.read_text()
    text = text[: text.index("[axes]")] + "[axes]\nturns = [1]\n"
    (tmp_path / "shop.style.toml").write_text(text)
    proposed = {
        "topics": ["late order", "repotting", "gift notes"],
        "personas": ["new owner", "collector"],
        "intents": ["ask", "complain"],
    }
    teacher = FakeBackend(answers=[proposed], default=good_answer)
    generate(opts(seeds_file, n=6), backend=teacher)
    gen, _, manifest = run_files()
    assert manifest["axes"]["source"] == "teacher"
    assert manifest["axes"]["topics"] == proposed["topics"]
    assert {r["meta"]["topic"] for r in gen} == set(proposed["topics"])
    again = FakeBackend(default=good_answer)
    generate(opts(seeds_file, n=6), backend=again)
    assert again.requests == []  # axes and conversations all come from the run


# -- the CLI ------------------------------------------------------------------------------
def test_cli_dry_run_prints_plan_tokens_and_cost_and_writes_nothing(seeds_file):
    res = CliRunner().invoke(
        cli,
        [
            "generate",
            "--seeds",
            str(seeds_file),
            "--n",
            "20",
            "--teacher",
            "gpt-4o-mini",
            "--dry-run",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Plan: 20 conversations" in res.output
    assert re.search(r"Estimated tokens: [\d,]+ prompt", res.output)
    assert re.search(r"Estimated cost: \$0\.\d+", res.output)
    assert not Path("outputs").exists()


def test_cli_missing_openai_key_is_one_line(seeds_file):
    res = CliRunner().invoke(
        cli, ["generate", "--seeds", str(seeds_file), "--n", "2", "--teacher", "openai:gpt-4o-mini"]
    )
    assert res.exit_code == 1
    assert "OPENAI_API_KEY is not set; export OPENAI_API_KEY" in res.output
    assert "Traceback" not in res.output


def test_cli_unknown_provider_and_missing_seeds_are_one_line(seeds_file):
    res = CliRunner().invoke(cli, ["generate", "--seeds", str(seeds_file), "--teacher", "foo:bar"])
    assert res.exit_code == 2 and "unknown provider 'foo'" in res.output
    res = CliRunner().invoke(cli, ["generate", "--seeds", "nope.jsonl"])
    assert res.exit_code == 1 and "nope.jsonl: seeds file not found" in res.output


def test_cli_bad_seed_line_names_file_and_line(tmp_path):
    seeds = tmp_path / "x.jsonl"
    seeds.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    (tmp_path / "x.style.toml").write_text(STYLE.read_text())
    res = CliRunner().invoke(cli, ["generate", "--seeds", str(seeds), "--teacher", "fake:x"])
    assert res.exit_code == 1
    assert f"{seeds}:1: no user message followed by an assistant reply" in res.output


# -- against a real HTTP server -----------------------------------------------------------
def _server_responder(body):
    return json.dumps(good_answer(body["messages"]))


def _rows(db: Path) -> list[dict]:
    import sqlite3

    con = sqlite3.connect(db)
    rows = [
        json.loads(r[0])
        for r in con.execute("SELECT request FROM calls WHERE response IS NOT NULL")
    ]
    con.close()
    return rows


def test_kill_and_resume_finishes_n_and_resends_no_finished_request(seeds_file, tmp_path):
    """SIGKILL a `distill generate` subprocess midway; the rerun ends with exactly n examples
    and the server never answered a request twice that had finished before the kill."""
    import os
    import subprocess
    import sys

    from conftest import sigkill_midway
    from fake_openai_server import FakeOpenAIServer, messages_key

    n = 40
    out = tmp_path / "outputs"
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-key", "DISTILL_OUTPUTS": str(out)}
    cmd = [
        sys.executable,
        "-m",
        "distill",
        "generate",
        "--seeds",
        str(seeds_file),
        "--n",
        str(n),
        "--teacher",
        "openai:gpt-4o-mini",
        "--concurrency",
        "4",
    ]
    faults = {"429": 0.05, "500": 0.05}
    with FakeOpenAIServer(
        _server_responder, latency=0.05, faults=faults, retry_after=0.01
    ) as server:
        cmd += ["--base-url", server.url]
        gen = out / "shop" / "generated.jsonl"
        done_before = sigkill_midway(cmd, env, tmp_path, gen, 10, timeout=60)
        assert 10 <= done_before < n, "the kill should land midway"
        finished = [messages_key(r["messages"]) for r in _rows(out / "shop" / "calls.sqlite")]
        res = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr
    records = list(read_jsonl(gen))
    rejected = (
        [r for r in read_jsonl(out / "shop" / "rejected.jsonl")]
        if (out / "shop" / "rejected.jsonl").exists()
        else []
    )
    indices = [r["meta"]["plan_index"] for r in records] + [
        r["example"]["meta"]["plan_index"] for r in rejected
    ]
    assert sorted(indices) == list(range(n))  # exactly n accounted for, none twice
    assert len({r["id"] for r in records}) == len(records)
    for key in finished:  # finished before the kill: answered once, over both runs
        assert server.finished_messages[key] == 1
    assert server.counts["429"] + server.counts["500"] > 0
    in_flight = server.counts["ok"] - len(_rows(out / "shop" / "calls.sqlite"))
    assert 0 <= in_flight <= 4  # at most the requests in flight at the kill were re-sent
    assert "sk-test-key" not in "".join(
        p.read_text(errors="ignore") for p in (out / "shop").iterdir() if p.is_file()
    )
    assert f"{n} of {n} accepted" in res.stdout


def test_budget_cap_stops_before_spending_past_it(seeds_file):
    from fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer(_server_responder) as server:
        res = CliRunner().invoke(
            cli,
            [
                "generate",
                "--seeds",
                str(seeds_file),
                "--n",
                "50",
                "--teacher",
                "gpt-4o",
                "--base-url",
                server.url,
                "--max-budget",
                "0.05",
                "--concurrency",
                "4",
            ],
            env={"OPENAI_API_KEY": "k"},
        )
    assert res.exit_code == 1, res.output
    assert "--max-budget $0.05 reached" in res.output
    gen, rej, manifest = run_files()
    spent = manifest["stages"]["generate"]["cost_usd"]
    assert 0 < spent <= 0.05
    assert 0 < len(gen) < 50 and manifest["stages"]["generate"]["status"] == "stopped-budget"


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(seeds_file, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from fake_openai_server import FakeOpenAIServer

    out = tmp_path / "outputs"
    env = {**os.environ, "OPENAI_API_KEY": "k", "DISTILL_OUTPUTS": str(out)}
    with FakeOpenAIServer(_server_responder, latency=0.2) as server:
        cmd = [
            sys.executable, "-m", "distill", "generate", "--seeds", str(seeds_file),
            "--n", "40", "--teacher", "gpt-4o-mini", "--base-url", server.url,
            "--concurrency", "2",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        while server.counts["ok"] < 4:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Interrupted:" in err and "Resume with: distill generate --seeds" in err
    assert "Traceback" not in err
    manifest = json.loads((out / "shop" / "manifest.json").read_text())
    assert manifest["stages"]["generate"]["status"] == "interrupted"
    assert manifest["stages"]["generate"]["counts"]["remaining"] > 0


def test_local_teachers_get_a_grammar_pattern_that_starts_replies_in_the_voice(style):
    from distill.stages.generate import load_seeds, reply_pattern

    pattern = reply_pattern(style, load_seeds(ROOT / "seeds" / "greenleaf.jsonl"))
    assert re.fullmatch(pattern, "Sorry about that! I've sent a new pot, it ships tomorrow.")
    assert not re.fullmatch(pattern, "The parcel is at the depot.")  # no warm opening
    assert not re.fullmatch(pattern, "Sorry! **Tomorrow** it ships.")  # markdown is banned
    model = ConversationTypes(style, reply_pattern=pattern).get(1)
    schema = json.dumps(model.model_json_schema())
    assert json.dumps(pattern)[1:-1] in schema
    # the pattern steers decoding only: validation still speaks in the spec's words
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="warm-opening"):
        model.model_validate(
            {"exchanges": [{"user": "Hi", "assistant": "It ships tomorrow, check email."}]}
        )


def test_a_near_copy_of_a_shown_example_counts_as_a_copy(style):
    from distill.stages.generate import copied_example

    seeds = [Seed([{"user": SEEDS[1][0], "assistant": SEEDS[1][1]}], "")]
    model = ConversationTypes(style).get(1)
    near = model.model_validate(
        {
            "exchanges": [
                {
                    "user": "How often should I water my new monstera?",
                    "assistant": "Great! I'll email you our watering guide now.",
                }
            ]
        }
    )
    assert copied_example(near, seeds) is not None
    fresh = model.model_validate(
        {
            "exchanges": [
                {
                    "user": "Can I put a cactus in the bathroom?",
                    "assistant": "Great! I'll email you our light guide now.",
                }
            ]
        }
    )
    assert copied_example(fresh, seeds) is None


def roleplay_answer(messages):
    """Customer turns (free text) and assistant replies (typed), as role-play mode asks."""
    if messages[0]["role"] == "system" and messages[0]["content"] == SYSTEM:
        turn = sum(m["role"] == "user" and "rejected" not in m["content"] for m in messages)
        return {"reply": REPLIES[(turn - 1) % 3].format(topic="your plant") + f" Ref {turn}."}
    prompt = messages[0]["content"]
    topic = re.search(r"about: (.*)\.", prompt).group(1)
    follow = " again" if "The chat so far" in prompt else ""
    return {"message": f'"Hi, I need help{follow} with {topic}, please."\nExtra line dropped.'}


def test_roleplay_mode_writes_each_turn_as_customer_then_assistant(seeds_file):
    teacher = FakeBackend(default=roleplay_answer)
    generate(opts(seeds_file, n=6, roleplay=True), backend=teacher)
    gen, rej, manifest = run_files()
    assert len(gen) == 6 and not rej
    assert manifest["config"]["generate"]["roleplay"] is True
    for rec in gen:
        msgs = rec["messages"]
        assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * rec["meta"][
            "turns"
        ]
        assert msgs[1]["content"] == f"Hi, I need help with {rec['meta']['topic']}, please."
        if rec["meta"]["turns"] > 1:
            assert "again" in msgs[3]["content"]  # the customer saw the chat so far
    assert len(teacher.requests) == sum(2 * r["meta"]["turns"] for r in gen)


def test_roleplay_reasks_a_reply_that_breaks_the_voice(seeds_file):
    first = {"done": False}

    def answer(messages):
        if messages[0]["content"] == SYSTEM and not first["done"]:
            first["done"] = True
            return {"reply": "**Noted.** It ships tomorrow."}
        return roleplay_answer(messages)

    teacher = FakeBackend(default=answer)
    generate(opts(seeds_file, n=1, concurrency=1, roleplay=True), backend=teacher)
    gen, rej, _ = run_files()
    assert len(gen) == 1
    reask = [m for m in teacher.requests if m[-1]["content"].startswith("That reply was rejected")]
    assert reask and "no-markdown" in reask[0][-1]["content"]


def test_roleplay_customer_pattern_makes_a_constrained_model_name_the_topic():
    from distill.stages.generate import customer_type

    schema = customer_type("watering advice").model_json_schema()
    pattern = schema["properties"]["message"]["pattern"]
    assert re.fullmatch(pattern, "How often should I water my fern?")
    assert not re.fullmatch(pattern, "Where is my parcel?")
    assert "pattern" not in json.dumps(customer_type(None).model_json_schema())


# -- issue 15: what the user asked for is what they get ----------------------------------
def _invoke(args: list[str], **env: str):
    return CliRunner().invoke(cli, ["generate", *args], env=env or None)


def _bad_chat(messages) -> dict:
    """A chat that breaks the voice (no warm opening, markdown) for whatever point is asked."""
    bad = {"user": "Where is it?", "assistant": "It is at the depot. **Tomorrow.**"}
    return {"exchanges": [bad] * point_of(messages)["turns"]}


def test_roleplay_keeps_max_budget_a_hard_cap(seeds_file):
    """Role-play calls reserve their worst case before they are sent, as whole chats do
    (`--roleplay --max-budget 0.0005` once spent $0.0009)."""
    from fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer(lambda body: json.dumps(roleplay_answer(body["messages"]))) as server:
        res = _invoke(
            [
                "--seeds", str(seeds_file), "--n", "30", "--teacher", "gpt-4o-mini",
                "--base-url", server.url, "--roleplay", "--max-budget", "0.0005",
                "--concurrency", "4",
            ],
            OPENAI_API_KEY="k",
        )  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "--max-budget $0.0005 reached" in res.output
    _, _, manifest = run_files()
    assert 0 < manifest["stages"]["generate"]["usage"]["cost_usd"] <= 0.0005


def test_max_budget_needs_a_price_which_flags_or_distill_toml_can_give(seeds_file, tmp_path):
    import os
    import subprocess
    import sys

    from fake_openai_server import FakeOpenAIServer

    args = ["--seeds", str(seeds_file), "--n", "2", "--teacher", "openai:my-model"]
    res = _invoke([*args, "--base-url", "http://127.0.0.1:9/v1", "--max-budget", "1"])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "\n" not in line and "openai:my-model" in line
    assert "--price-in" in line and "--price-out" in line
    assert not Path("outputs").exists()  # refused before anything was made

    (tmp_path / "distill.toml").write_text("[generate]\nprice-in = 100.0\nprice-out = 200.0\n")
    env = {**os.environ, "OPENAI_API_KEY": "k", "DISTILL_OUTPUTS": str(tmp_path / "outputs")}
    with FakeOpenAIServer(_server_responder) as server:
        run = subprocess.run(
            [sys.executable, "-m", "distill", "generate", *args, "--base-url", server.url,
             "--max-budget", "1"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    _, _, manifest = run_files()
    assert manifest["config"]["generate"]["price_in"] == 100.0
    assert 0 < manifest["stages"]["generate"]["cost_usd"] <= 1


def test_failed_calls_replayed_from_calls_sqlite_count_as_cached_and_cost_nothing(seeds_file):
    """Every point's first answer breaks the voice and its re-ask passes; after a crash that
    lost generated.jsonl, the rerun replays all 8 calls, failed ones too, and pays nothing."""
    from fake_openai_server import FakeOpenAIServer

    def responder(body):
        if "That chat was rejected" in body["messages"][-1]["content"]:
            return _server_responder(body)
        return json.dumps(_bad_chat(body["messages"]))

    args = ["--seeds", str(seeds_file), "--n", "4", "--teacher", "gpt-4o", "--concurrency", "2"]
    with FakeOpenAIServer(responder) as server:
        first = _invoke([*args, "--base-url", server.url], OPENAI_API_KEY="k")
        assert first.exit_code == 0, first.output
        spent = run_files()[2]["stages"]["generate"]["cost_usd"]
        (Path("outputs") / "shop" / "generated.jsonl").unlink()
        sent = server.counts["requests"]
        second = _invoke([*args, "--base-url", server.url], OPENAI_API_KEY="k")
        assert second.exit_code == 0, second.output
        assert server.counts["requests"] == sent
    assert "8 calls (8 from calls.sqlite, 4 re-asks)" in second.output
    assert f"${spent:.4f}" in second.output
    assert run_files()[2]["stages"]["generate"]["cost_usd"] == spent


def test_n_is_what_you_get_rejected_points_are_replaced_by_more_of_the_plan(seeds_file, style):
    first = make_plan(style.axes, 1)[0]

    def answer(messages):  # every chat about the first point's topic fails
        return (
            _bad_chat(messages)
            if point_of(messages)["topic"] == first.topic
            else good_answer(messages)
        )

    teacher = FakeBackend(default=answer)
    result = generate(opts(seeds_file, n=12, max_reasks=0), backend=teacher)
    gen, rej, manifest = run_files()
    p = result.progress
    assert len(gen) == p.generated == 12 and len(rej) == p.rejected > 0
    assert p.planned == 12 + p.rejected and len(teacher.requests) == p.planned
    assert all(r["example"]["meta"]["topic"] == first.topic for r in rej)
    indices = sorted(r["meta"]["plan_index"] for r in gen) + [
        r["example"]["meta"]["plan_index"] for r in rej
    ]
    assert sorted(indices) == list(range(p.planned))  # the plan, extended in order
    assert manifest["stages"]["generate"]["counts"]["planned"] == p.planned
    assert [x["plan_index"] for x in manifest["plan"]] == list(range(p.planned))

    more = FakeBackend(default=answer)  # a bigger --n adds to the run
    again = generate(opts(seeds_file, n=15, max_reasks=0), backend=more)
    gen, rej, _ = run_files()
    assert len(gen) == 15 and len({r["id"] for r in gen}) == 15
    assert len(more.requests) == again.progress.planned - p.planned  # nothing done is re-sent

    res = _invoke(["--seeds", str(seeds_file), "--n", "15", "--teacher", "fake:teacher"])
    assert f"15 of 15 accepted, {again.progress.planned} planned" in res.output


def test_when_nothing_passes_generate_fails_with_the_top_reasons_and_what_to_do(seeds_file):
    from distill.errors import DistillError

    teacher = FakeBackend(default=_bad_chat)
    with pytest.raises(DistillError) as err:
        generate(opts(seeds_file, n=4, max_reasks=1), backend=teacher)
    msg = str(err.value)
    assert "\n" not in msg and "none of the 12 planned conversations passed" in msg
    assert "warm-opening" in msg and "rejected.jsonl" in msg and "--teacher" in msg
    _, rej, manifest = run_files()
    assert len(rej) == 12 and len(teacher.requests) == 24  # at most 3 x n points planned
    assert manifest["stages"]["generate"]["status"] == "failed"

    res = CliRunner().invoke(
        cli, ["run", "--seeds", str(seeds_file), "--name", "r", "--teacher", "fake:x", "--n", "2"]
    )
    assert res.exit_code == 1 and "Error: none of the 6 planned conversations passed" in res.output
    assert not (Path("outputs") / "r" / "deduped.jsonl").exists()  # run stopped there


def test_a_generate_that_fails_before_any_call_keeps_the_current_run(seeds_file):
    generate(opts(seeds_file, n=2), backend=FakeBackend(default=good_answer))
    current = Path("outputs") / ".current"
    assert current.read_text().strip() == "shop"
    res = _invoke(["--seeds", str(seeds_file), "--name", "other", "--teacher", "gpt-4o-mini"])
    assert res.exit_code == 1 and "OPENAI_API_KEY is not set" in res.output
    assert current.read_text().strip() == "shop"
    assert not (Path("outputs") / "other").exists()


def test_with_nothing_configured_the_embedded_teacher_plans_minutes_of_work(seeds_file):
    from distill.models import DEFAULT_TEACHER, EMBEDDED_N

    res = _invoke(["--seeds", str(seeds_file), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert DEFAULT_TEACHER in res.output.splitlines()[0]
    assert f"Plan: {EMBEDDED_N} conversations" in res.output


def test_with_an_openai_key_the_teacher_is_gpt_4o_mini_and_the_first_line_says_so(seeds_file):
    from fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer(_server_responder) as server:
        res = _invoke(
            ["--seeds", str(seeds_file), "--n", "3"],
            OPENAI_API_KEY="sk-default-teacher",
            OPENAI_BASE_URL=server.url,
        )
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0]
    assert "openai:gpt-4o-mini" in first and "OPENAI_API_KEY" in first
    assert re.search(r"about \$\d+\.\d{4}", first)
    gen, _, manifest = run_files()
    assert len(gen) == 3 and manifest["config"]["teacher"] == "openai:gpt-4o-mini"
    files = "".join(p.read_text(errors="ignore") for p in (Path("outputs") / "shop").iterdir())
    assert "sk-default-teacher" not in files
