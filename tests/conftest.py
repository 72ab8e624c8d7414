"""Shared fixtures: a GreenLeaf style spec, a fresh run folder, and a tiny random Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds" / "greenleaf.jsonl"
STYLE = ROOT / "seeds" / "greenleaf.style.toml"
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path, monkeypatch):
    """Each test gets its own outputs/ folder and cache, never the user's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISTILL_OUTPUTS", str(tmp_path / "outputs"))
    import distill.runs

    monkeypatch.setattr(distill.runs, "OUTPUTS", tmp_path / "outputs")
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST", "DISTILL_CONFIG"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def style():
    from distill.style import StyleSpec

    return StyleSpec.load(STYLE)


@pytest.fixture
def make_run(tmp_path):
    """make_run(name, records=None, **files) -> Run with generated.jsonl written from records."""
    from distill.runs import Run, atomic_write_jsonl

    def _make(name: str = "test", records=None, **files):
        run = Run.create(name, outputs=tmp_path / "outputs")
        if records is not None:
            atomic_write_jsonl(run.file("generated.jsonl"), records)
        for fname, recs in files.items():
            atomic_write_jsonl(run.file(fname.replace("__", ".")), recs)
        return run

    return _make


def greenleaf_example(user: str, reply: str, **meta) -> dict:
    from distill.records import Example

    ex = Example(
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
            {"role": "assistant", "content": reply},
        ],
        meta=meta,
    )
    return ex.to_record()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised Llama with a ChatML tokenizer (BPE trained here, ~600
    tokens): a real transformers model folder that trains and generates in seconds on CPU."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-llama")
    lines = SEEDS.read_text().splitlines() if SEEDS.exists() else []
    corpus = [json.dumps(json.loads(line)) for line in lines if line.strip()]
    corpus += [
        "So sorry for the wait! I've flagged it, tracking within the hour.",
        "My order is late. Where is my plant? Water it once a week and keep it in bright light.",
    ] * 5
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    import torch

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def sigkill_midway(
    cmd: list[str], env: dict, cwd: Path, watch: Path, lines: int, timeout: float
) -> int:
    """Start `cmd`, SIGKILL it once `watch` holds `lines` lines (or at the deadline), and
    return how many lines it had written: a kill at a random moment, for resume tests."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if watch.exists() and watch.read_text().count("\n") >= lines:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return watch.read_text().count("\n") if watch.exists() else 0
