"""Quality filters beyond the voice rules, on real text: what the embedded teacher wrote in the
demo (must fail) and what customers and a strong teacher write (must pass)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.backends import FakeBackend
from distill.quality import language_problem
from distill.runs import read_jsonl
from distill.stages.generate import GenerateOptions, generate
from distill.style import StyleSpec

ROOT = Path(__file__).resolve().parent.parent

# held-out customer turns and replies SmolLM2-135M wrote in `make demo` (2026-11-29)
NOT_ENGLISH = [
    "Nu mens a nie mia, un alte mehr nie zarfai, und das ist nicht gut",
    "ich wegt, die ich wegt, die ich wegt, die ich wegt",
    "Hola, mi pedido no ha llegado todavía y estoy preocupado por el regalo",
]
ENGLISH = [
    "Plant came smashed. Box crushed. Useless packaging.",  # terse, still English
    "Found webbing under my alocasia leaves. Spider mites, I assume. Best treatment?",
    "So sorry it arrived damaged! I've sent a free replacement, it ships tomorrow.",
]


@pytest.mark.parametrize("text", NOT_ENGLISH)
def test_language_filter_rejects_other_languages_and_gibberish(text):
    assert language_problem(text, "en").startswith("not-en")


@pytest.mark.parametrize("text", ENGLISH)
def test_language_filter_passes_real_english(text):
    assert language_problem(text, "en") is None


def test_language_filter_passes_every_turn_of_the_shipped_good_data():
    turns = [
        m["content"]
        for f in ("benchmarks/data/greenleaf_teacher.jsonl", "seeds/greenleaf.prompts.jsonl")
        for rec in read_jsonl(ROOT / f)
        for m in rec["messages"]
        if m["role"] != "system"
    ]
    assert len(turns) > 1000
    assert [t for t in turns if language_problem(t, "en")] == []


def test_generate_rejects_a_non_english_chat_with_the_reason(tmp_path):
    style = tmp_path / "shop.style.toml"
    style.write_text((ROOT / "seeds" / "greenleaf.style.toml").read_text())
    assert StyleSpec.load(style).quality.language == "en"
    seeds = tmp_path / "shop.jsonl"
    seeds.write_text((ROOT / "seeds" / "greenleaf.jsonl").read_text())
    prompts = tmp_path / "customers.txt"
    prompts.write_text(NOT_ENGLISH[0] + "\n" + "Where is my order GL-12345, it is a week late?\n")
    reply = {"reply": "Thanks for asking! I've checked it and will email you the tracking today."}
    opts = GenerateOptions(seeds=seeds, prompts=prompts, teacher="fake:t", max_reasks=0)
    generate(opts, backend=FakeBackend(default=lambda m: reply))
    gen = list(read_jsonl(Path("outputs/shop/generated.jsonl")))
    rej = list(read_jsonl(Path("outputs/shop/rejected.jsonl")))
    assert [r["messages"][1]["content"] for r in gen] == [prompts.read_text().splitlines()[1]]
    assert len(rej) == 1 and "not-en" in rej[0]["reason"]

    # a shop writing in another language turns the check off
    style.write_text(style.read_text() + '\n[quality]\nlanguage = ""\n')
    assert StyleSpec.load(style).quality.language == ""
    with pytest.raises(Exception, match="quality.language"):
        style.write_text(style.read_text().replace('language = ""', 'language = "xx"'))
        StyleSpec.load(style)
