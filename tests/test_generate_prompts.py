"""`distill generate --prompts`: the customer's side comes from a file, the teacher writes the
replies (checked and re-asked like any reply); resumable; bad files are one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.backends import FakeBackend
from distill.cli import cli
from distill.runs import read_jsonl
from distill.stages.generate import GenerateOptions, generate
from distill.stages.generate.stage import NothingAccepted

ROOT = Path(__file__).resolve().parent.parent
STYLE = ROOT / "seeds" / "greenleaf.style.toml"
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."
CUSTOMERS = [
    ("My monstera arrived with a snapped stem, can I get a new one?", "damaged plant on arrival"),
    ("How often should I water a snake plant in winter?", "watering advice"),
    ("Order GL-11111 still hasn't shipped after a week.", "late order"),
    ("Can I move my subscription box to the first of the month?", "subscription changes"),
    ("The code SPRING10 says it is invalid at checkout.", "discount codes"),
]


@pytest.fixture
def shop(tmp_path) -> tuple[Path, Path]:
    seeds = tmp_path / "shop.jsonl"
    seeds.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "My order is late."},
                    {"role": "assistant", "content": "So sorry! I've chased it for you today."},
                ]
            }
        )
        + "\n"
    )
    (tmp_path / "shop.style.toml").write_text(STYLE.read_text())
    prompts = tmp_path / "customers.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": u}], "meta": {"topic": t}}) + "\n"
            for u, t in CUSTOMERS
        )
    )
    return seeds, prompts


def reply(messages) -> dict:
    """A reply in the voice, different for every customer message."""
    return {
        "reply": f"Thanks for asking! I've noted it and will email you today. ({len(messages[-1]['content'])})"
    }


def test_the_teacher_answers_each_customer_message_once(shop):
    seeds, prompts = shop
    teacher = FakeBackend(default=reply)
    opts = GenerateOptions(seeds=seeds, prompts=prompts, n=10, teacher="fake:t", concurrency=2)
    result = generate(opts, backend=teacher)
    gen = list(read_jsonl(Path("outputs/shop/generated.jsonl")))
    assert result.progress.total == 5 and len(gen) == 5  # n is capped by the messages given
    asked = sorted(r["messages"][1]["content"] for r in gen)
    assert asked == sorted(u for u, _ in CUSTOMERS)
    for r in gen:
        assert r["messages"][0] == {"role": "system", "content": SYSTEM}
        assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
        topic = dict(CUSTOMERS)[r["messages"][1]["content"]]
        assert r["meta"]["topic"] == topic and r["meta"]["prompt"] is not None
    # the teacher saw the spec's system prompt and the customer's message, nothing invented
    assert all(
        req[0]["content"] == SYSTEM and req[-1]["role"] == "user" for req in teacher.requests
    )
    manifest = json.loads(Path("outputs/shop/manifest.json").read_text())
    assert manifest["inputs"]["customers"]["path"] == str(prompts.resolve())
    # a rerun sends nothing again
    again = FakeBackend(default=reply)
    generate(opts, backend=again)
    assert again.requests == []


def test_a_reply_that_breaks_the_voice_is_reasked_then_rejected(shop):
    seeds, prompts = shop
    teacher = FakeBackend(default=lambda m: {"reply": "It is at the depot. **Tomorrow.**"})
    opts = GenerateOptions(seeds=seeds, prompts=prompts, n=2, teacher="fake:t", max_reasks=1)
    with pytest.raises(NothingAccepted, match="warm-opening"):
        generate(opts, backend=teacher)
    rej = list(read_jsonl(Path("outputs/shop/rejected.jsonl")))
    # every message was tried once (n=2 planned, failures replaced while messages last)
    assert len(rej) == len(CUSTOMERS) and len(teacher.requests) == 2 * len(CUSTOMERS)
    assert all("warm-opening" in r["reason"] for r in rej)
    asked = {m["content"] for req in teacher.requests for m in req if m["role"] == "user"}
    assert {u for u, _ in CUSTOMERS} <= asked


def test_plain_text_prompts_and_bad_lines(shop, tmp_path):
    seeds, _ = shop
    txt = tmp_path / "msgs.txt"
    txt.write_text("Where is my order?\n\nDo you sell terracotta pots?\n")
    teacher = FakeBackend(default=reply)
    generate(GenerateOptions(seeds=seeds, prompts=txt, n=5, teacher="fake:t"), backend=teacher)
    assert len(list(read_jsonl(Path("outputs/shop/generated.jsonl")))) == 2

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi there, a question"}]})
        + "\n"
        + json.dumps({"messages": [{"role": "assistant", "content": "Hello!"}]})
        + "\n"
    )
    res = CliRunner().invoke(
        cli, ["generate", "--seeds", str(seeds), "--prompts", str(bad), "--name", "b"]
    )
    assert res.exit_code != 0
    assert f"{bad}:2: the last message must be the customer's" in res.output
    assert "Traceback" not in res.output
