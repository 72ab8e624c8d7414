"""`distill init`: a spec drafted from another business's seeds, checked on them, then used
by generate end to end (a loopback OpenAI server as the teacher; no real model)."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.cli import cli
from distill.runs import read_jsonl
from distill.style import StyleSpec

SYSTEM = "You are Spoke & Chain: friendly bike mechanics, short and practical."
CHATS = [
    [
        (
            "My rear brake squeals every time I stop.",
            "Thanks for asking! That's usually glazed pads. Bring it in and we'll sand or swap "
            "them while you wait.",
        )
    ],
    [
        (
            "How much is a puncture repair?",
            "Happy to help! A tube swap is 12 pounds including the tube, done in about 20 minutes.",
        )
    ],
    [
        (
            "Can you service my e-bike?",
            "Yes, we can! Book a full service online and we'll check the motor, brakes and gears.",
        )
    ],
    [
        (
            "My chain keeps slipping on the big cog.",
            "Thanks for the details! Sounds like a worn chain or cassette. Drop it in and we'll "
            "measure both for free.",
        )
    ],
    [
        (
            "Do you sell kids' bikes?",
            "We do! We stock 16 and 20 inch bikes, and we'll fit the saddle height in store.",
        )
    ],
    [
        (
            "When are you open on Sunday?",
            "Good question! Sundays we're open 10 till 4, and you can book repairs online anytime.",
        )
    ],
    [
        (
            "I dropped my bike off Monday, is it ready?",
            "Thanks for checking in! It's on the stand now and we'll text you by 5 today.",
        ),
        (
            "Great, can you also check the tyres?",
            "Of course! We'll check tread and pressure and note anything worth replacing.",
        ),
    ],
    [
        (
            "My gears click all the time.",
            "Happy to help! Usually a cable needs tension. Turn the barrel adjuster half a turn, "
            "or pop in and we'll tune it.",
        )
    ],
    [
        (
            "Can I rent a bike for the weekend?",
            "Sorry, we don't rent bikes! The hire shop on Quay Street is two minutes away.",
        )
    ],
    [
        (
            "Is a tubeless conversion worth it?",
            "Good question! For gravel riding yes, fewer flats. We can convert your wheels in a day.",
        )
    ],
]

PROPOSAL = {
    "description": "Spoke & Chain is a bike repair shop. Support is friendly and practical.",
    "scope": "Repairs, servicing, opening hours, bikes and parts for sale.",
    "system_prompt": "You are Spoke & Chain Support: friendly and practical.",
    "topics": ["brake noise", "puncture repair", "gear tuning", "e-bike service"],
    "personas": ["commuter", "parent buying a kids' bike", "weekend racer"],
    "intents": ["book a repair", "ask a price", "ask for advice"],
    "rules": [
        {
            "name": "warm-opening",
            "why": "the first sentence greets or thanks the rider",
            "kind": "first_sentence_must_match",
            "pattern": r"(?i)\b(thanks|happy|yes|we do|good question|of course|sorry)\b",
        },
        {
            "name": "no-sir-madam",
            "why": "talks like a neighbour, not a bank",
            "kind": "must_not_match",
            "pattern": r"(?i)\b(sir|madam)\b",
        },
        {
            "name": "names-a-price",
            "why": "every reply quotes a price",
            "kind": "must_match",
            "pattern": r"(?i)(pounds|£)",
        },
    ],
}


def seeds_file(folder: Path, name: str = "spoke-chain.jsonl", system: str | None = SYSTEM) -> Path:
    path = folder / name
    lines = []
    for chat in CHATS:
        msgs = [{"role": "system", "content": system}] if system else []
        for user, reply in chat:
            msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        lines.append(json.dumps({"messages": msgs}))
    path.write_text("\n".join(lines) + "\n")
    return path


def bike_teacher(body: dict) -> str:
    """The loopback teacher: the proposal for init's request, a bike chat for generate's."""
    from fake_openai_server import default_responder, request_schema

    props = (request_schema(body) or {}).get("properties", {})
    if "rules" in props:
        return json.dumps(PROPOSAL)
    if "exchanges" not in props:
        return default_responder(body)
    turns = int(props["exchanges"].get("minItems", 1))
    prompt = str(body["messages"][-1].get("content") or "")
    tag = hashlib.sha256(prompt.encode()).hexdigest()[:6]
    return json.dumps(
        {
            "exchanges": [
                {
                    "user": f"Hi, my bike needs a look, the front wheel rubs (ticket {tag}-{i}).",
                    "assistant": f"Thanks for the details! Bring it in and we'll true the wheel "
                    f"while you wait, ticket {tag}-{i}.",
                }
                for i in range(turns)
            ]
        }
    )


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), env={"OPENAI_API_KEY": "k"})


def test_init_then_generate_end_to_end_with_a_loopback_teacher(tmp_path):
    from fake_openai_server import FakeOpenAIServer

    seeds = seeds_file(tmp_path)
    spec_path = tmp_path / "spoke-chain.style.toml"
    with FakeOpenAIServer(bike_teacher) as server:
        url = server.url
        res = invoke("init", "--seeds", str(seeds), "--teacher", "gpt-4o", "--base-url", url)
        assert res.exit_code == 0, res.output
        sent = server.counts["requests"]
        assert sent >= 1
        spec = StyleSpec.load(spec_path)
        assert spec.system_prompt == SYSTEM  # the seeds' own, not the teacher's
        assert spec.axes.topics == PROPOSAL["topics"]
        assert spec.description.startswith("Spoke & Chain is a bike repair shop")
        names = [r.name for r in spec.rules]
        assert "warm-opening" in names and "no-sir-madam" in names
        assert "names-a-price" not in names  # the seeds break it: written commented out
        text = spec_path.read_text()
        assert "# proposed by openai:gpt-4o; every seed reply keeps it" in text
        assert "# DROPPED: proposed by openai:gpt-4o" in text and "# must_match = " in text
        assert "# measured: none of the 11 seed replies break it" in text
        assert (
            "Dropped rule 'names-a-price' (proposed by openai:gpt-4o): your seeds break it at "
            f"{seeds} lines 1, 3, 4, 5, 6, 7, 8, 9 and 10;" in res.output
        )
        assert "every seed passes the draft" in res.output

        check = CliRunner().invoke(cli, ["validate", str(seeds), "--style", str(spec_path)])
        assert check.exit_code == 0, check.output
        assert ": style:" not in check.output and "(0 warnings)" in check.output

        again = invoke(
            "init", "--seeds", str(seeds), "--teacher", "gpt-4o", "--base-url", url, "--force"
        )
        assert again.exit_code == 0 and "from calls.sqlite, free" in again.output
        assert server.counts["requests"] == sent  # the same draft is not paid for twice

        gen = invoke(
            "generate", "--seeds", str(seeds), "--n", "4", "--teacher", "gpt-4o",
            "--base-url", url, "--concurrency", "2",
        )  # fmt: skip
        assert gen.exit_code == 0, gen.output
    assert "4 of 4 accepted" in gen.output
    records = list(read_jsonl(Path("outputs") / "spoke-chain" / "generated.jsonl"))
    assert len(records) == 4
    assert {r["messages"][0]["content"] for r in records} == {SYSTEM}
    assert {r["meta"]["topic"] for r in records} <= set(PROPOSAL["topics"])


def test_init_refuses_to_overwrite_a_spec_without_force(tmp_path):
    seeds = seeds_file(tmp_path)
    spec_path = tmp_path / "spoke-chain.style.toml"
    spec_path.write_text("# my hand-written spec\n")
    res = invoke("init", "--seeds", str(seeds))
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        f"Error: {spec_path}: a style spec is already there; edit it, or pass --force to "
        "draft over it"
    ]
    assert spec_path.read_text() == "# my hand-written spec\n"
    forced = invoke("init", "--seeds", str(seeds), "--force")
    assert forced.exit_code == 0, forced.output
    assert StyleSpec.load(spec_path).system_prompt == SYSTEM


@pytest.mark.parametrize("teacher", [None, "local:smollm2-135m"])
def test_embedded_or_no_teacher_writes_the_measured_parts_without_loading_a_model(
    tmp_path, monkeypatch, teacher
):
    import distill.stages.draft.propose as propose

    def no_model(*a, **k):
        raise AssertionError("init loaded a model it cannot use")

    monkeypatch.setattr(propose, "get_backend", no_model)
    seeds = seeds_file(tmp_path)
    res = invoke("init", "--seeds", str(seeds), *(["--teacher", teacher] if teacher else []))
    assert res.exit_code == 0, res.output
    why = "no --teacher given" if teacher is None else f"{teacher} is too small to propose them"
    notes = [line for line in res.output.splitlines() if line.startswith("Not proposed")]
    assert notes == [
        f"Not proposed ({why}): description, scope, topics, personas, intents and rules; "
        "rerun with --teacher openai:gpt-4o (or ollama:MODEL) to have them proposed."
    ]
    spec = StyleSpec.load(tmp_path / "spoke-chain.style.toml")
    assert spec.system_prompt == SYSTEM
    replies = [r for chat in CHATS for _, r in chat]
    from distill.style import count_sentences, count_words

    assert spec.reply.min_words <= min(map(count_words, replies))
    assert max(map(count_words, replies)) < spec.reply.max_words <= 40
    assert max(map(count_sentences, replies)) < spec.reply.max_sentences
    assert sorted(set(spec.axes.turns)) == [1, 2]  # one seed chat has two exchanges
    assert spec.axes.is_empty()  # generate's teacher proposes them at run time
    assert {r.name for r in spec.rules} == {"no-markdown", "no-ai-talk", "no-links", "no-emoji"}
    check = CliRunner().invoke(
        cli, ["validate", str(seeds), "--style", str(tmp_path / "spoke-chain.style.toml")]
    )
    assert check.exit_code == 0 and "(0 warnings)" in check.output, check.output


def test_a_stock_rule_the_seeds_break_is_left_out(tmp_path):
    seeds = seeds_file(tmp_path)
    lines = seeds.read_text().splitlines()
    chat = json.loads(lines[0])
    chat["messages"][-1]["content"] = "Thanks! See **this guide** at https://spokechain.test today."
    seeds.write_text("\n".join([json.dumps(chat), *lines[1:]]) + "\n")
    assert invoke("init", "--seeds", str(seeds)).exit_code == 0
    spec = StyleSpec.load(tmp_path / "spoke-chain.style.toml")
    assert {r.name for r in spec.rules} == {"no-ai-talk", "no-emoji"}


def test_a_teacher_that_cannot_answer_leaves_one_line_and_the_measured_parts(tmp_path):
    seeds = seeds_file(tmp_path)
    res = invoke("init", "--seeds", str(seeds), "--teacher", "fake:x")  # answers "fake reply"
    assert res.exit_code == 0, res.output
    notes = [line for line in res.output.splitlines() if line.startswith("Not proposed")]
    assert len(notes) == 1 and "fake:x could not" in notes[0]
    assert StyleSpec.load(tmp_path / "spoke-chain.style.toml").reply.max_words > 0


def test_seeds_with_another_system_prompt_are_listed_by_line(tmp_path):
    seeds = seeds_file(tmp_path)
    lines = seeds.read_text().splitlines()
    odd = json.loads(lines[4])
    odd["messages"][0]["content"] = "You are a bike shop bot."
    seeds.write_text("\n".join([*lines[:4], json.dumps(odd), *lines[5:]]) + "\n")
    res = invoke("init", "--seeds", str(seeds))
    assert res.exit_code == 0, res.output
    assert f"{seeds}:5: its system prompt differs from the draft's" in res.output
    assert "1 problem(s) on your seeds, listed above" in res.output
    check = CliRunner().invoke(
        cli, ["validate", str(seeds), "--style", str(tmp_path / "spoke-chain.style.toml")]
    )
    assert f"{seeds}:5: style: messages[0] (system): system-prompt:" in check.output


def test_seeds_without_a_system_prompt_get_a_drafted_one(tmp_path):
    seeds = seeds_file(tmp_path, "spoke-chain.jsonl", system=None)
    res = invoke("init", "--seeds", str(seeds))
    assert res.exit_code == 0, res.output
    spec_path = tmp_path / "spoke-chain.style.toml"
    assert StyleSpec.load(spec_path).system_prompt.startswith("You are Spoke Chain Support")
    assert "# system prompt: drafted: the seeds have no system prompt" in spec_path.read_text()


def test_generate_without_a_spec_says_so_in_one_line_and_points_to_init(tmp_path):
    seeds = seeds_file(tmp_path)
    res = invoke("generate", "--seeds", str(seeds), "--teacher", "fake:x", "--n", "2")
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        f"Error: {tmp_path / 'spoke-chain.style.toml'}: no style spec for {seeds}; draft one "
        f"from the seeds with `distill init --seeds {seeds}`, edit it, then rerun (or pass "
        "--style PATH)"
    ]
    assert not (Path("outputs") / "spoke-chain").exists()


@pytest.mark.parametrize(
    "pattern", [r"(?i)\bwe'll\b", r"it's'", r"a'''b", r"\d+\.\s", "(?i)caf\u00e9|\\u2600"]
)
def test_any_regex_round_trips_through_the_toml_draft(pattern):
    from distill.stages.draft.toml_text import regex

    assert tomllib.loads(f"p = {regex(pattern)}\n")["p"] == pattern


def test_run_without_a_spec_points_to_init_too(tmp_path):
    seeds = seeds_file(tmp_path)
    res = invoke("run", "--seeds", str(seeds), "--teacher", "fake:x", "--n", "2", "--yes")
    assert res.exit_code == 1
    assert f"no style spec for {seeds}; draft one from the seeds with `distill init" in res.output
    assert "Traceback" not in res.output
