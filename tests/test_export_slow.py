"""The exported GGUF in a real GGML runtime (llama-cpp-python, the `gguf-check` extra): SmolLM2
trained on the GreenLeaf seeds, exported with `distill export --format gguf`, answers held-out
customer messages as the transformers student does and not as the base does (minutes of CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds" / "greenleaf.jsonl"
PROMPTS = ROOT / "seeds" / "greenleaf.prompts.jsonl"
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."
SAME_FIRST = 8  # greedy tokens that must match: F16 rounding may flip a near-tie after that
NEW_TOKENS = 24


def transformers_greedy(model, ids: list[int], eos: int) -> list[int]:
    """Greedy tokens up to (not including) the end token, as llama_cpp_greedy returns them."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)
    new = out[0, len(ids) :].tolist()
    return new[: new.index(eos)] if eos in new else new


def llama_cpp_greedy(llm, ids: list[int]) -> list[int]:
    out = []
    for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        if token == llm.token_eos() or len(out) == NEW_TOKENS:
            break
        out.append(token)
    return out


def test_gguf_in_llama_cpp_answers_like_the_student(make_run, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed: pip install 'distill[gguf-check]'"
    )
    from click.testing import CliRunner

    from distill.cli import cli
    from distill.export.student import merged_student, trained_student

    seeds = [json.loads(x) for x in SEEDS.read_text().splitlines() if x.strip()]
    run = make_run("gguf", train__jsonl=seeds[:15], eval__jsonl=seeds[15:])
    args = ["train", "--run", str(run.path), "--student", "local:smollm2-135m"]
    r = CliRunner().invoke(cli, [*args, "--epochs", "3", "--lr", "1e-3", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "gguf"
    r = CliRunner().invoke(
        cli, ["export", "--format", "gguf", "--run", str(run.path), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output

    from distill import local_model

    student, tok = merged_student(trained_student(run))
    base, _ = local_model.load("smollm2-135m")
    llm = llama_cpp.Llama(model_path=str(out / "model.gguf"), n_ctx=512, n_threads=2, verbose=False)
    customers = [json.loads(x) for x in PROMPTS.read_text().splitlines()[-3:]]  # not trained on
    differs = 0
    for c in customers:
        messages = [{"role": "system", "content": SYSTEM}, *c["messages"]]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)[
            "input_ids"
        ]
        assert llm.tokenize(tok.decode(ids).encode(), add_bos=False, special=True) == ids
        want = transformers_greedy(student, ids, tok.eos_token_id)
        got = llama_cpp_greedy(llm, ids)
        assert got[:SAME_FIRST] == want[:SAME_FIRST], (tok.decode(got), tok.decode(want))
        differs += (
            transformers_greedy(base, ids, tok.eos_token_id)[:SAME_FIRST] != want[:SAME_FIRST]
        )
    llm.close()
    assert differs >= 2  # the student's answers are not the base's
