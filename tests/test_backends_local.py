"""The in-process `local:` backend: constrained JSON from a tiny random model, batching, free
text, PEFT adapter folders; the real embedded SmolLM2 under `-m slow`."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel, Field

pytest.importorskip("torch")
pytest.importorskip("xgrammar")


class Ticket(BaseModel):
    order: str = Field(max_length=12)
    urgent: bool


def _backend(path, **kw):
    from distill.backends import get_backend

    return get_backend(f"local:{path}", **kw)


def test_constrained_output_is_schema_valid_even_from_random_weights(tiny_model_dir):
    from distill.backends import InvalidOutput

    backend = _backend(tiny_model_dir)

    async def go():
        out = []
        for seed in range(3):
            try:
                out.append(
                    await backend.chat(
                        [{"role": "user", "content": "Order GL-1 is late."}],
                        response_model=Ticket,
                        max_retries=0,
                        max_tokens=48,
                        seed=seed,
                    )
                )
            except InvalidOutput as e:  # only a clean, reported failure is acceptable
                out.append(e)
        await backend.aclose()
        return out

    results = asyncio.run(go())
    valid = [r for r in results if not isinstance(r, Exception)]
    assert valid, [str(r) for r in results]
    for r in valid:
        assert isinstance(r.value, Ticket)
        assert json.loads(r.text) == r.value.model_dump()
        assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0


def test_concurrent_requests_share_one_generate_call_and_free_text_works(tiny_model_dir):
    backend = _backend(tiny_model_dir, batch_size=8)
    calls = []
    real = backend._generate

    def spy(jobs):
        calls.append(len(jobs))
        return real(jobs)

    backend._generate = spy

    async def go():
        msgs = [[{"role": "user", "content": f"hello {i}"}] for i in range(4)]
        typed = [backend.chat(m, response_model=Ticket, max_retries=0, max_tokens=40) for m in msgs]
        text = backend.chat(msgs[0], max_tokens=8)
        res = await asyncio.gather(*typed, text, return_exceptions=True)
        await backend.aclose()
        return res

    res = asyncio.run(go())
    assert calls and calls[0] == 5  # four typed rows and one free-text row in one batch
    assert isinstance(res[-1].value, str)
    assert all(isinstance(r.value, Ticket) for r in res[:-1] if not isinstance(r, Exception))


def test_peft_adapter_folder_loads_base_plus_adapter(tiny_model_dir, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    cfg = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    model = peft.get_peft_model(base, cfg)
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    meta = json.loads((adapter / "adapter_config.json").read_text())
    meta["base_model_name_or_path"] = str(tiny_model_dir)
    (adapter / "adapter_config.json").write_text(json.dumps(meta))

    backend = _backend(adapter)

    async def go():
        r = await backend.chat([{"role": "user", "content": "hi"}], max_tokens=6)
        await backend.aclose()
        return r

    reply = asyncio.run(go())
    assert isinstance(reply.value, str)
    assert type(backend._model).__name__.startswith("Peft")


def test_adapter_with_unknown_base_is_one_clear_error(tmp_path):
    from distill.backends.local import load_model
    from distill.errors import InputError

    (tmp_path / "adapter_config.json").write_text('{"base_model_name_or_path": "nowhere/x"}')
    with pytest.raises(InputError, match="base_model_name_or_path"):
        load_model(str(tmp_path))


@pytest.mark.slow
def test_embedded_smollm2_writes_valid_greenleaf_json(style):
    from distill.stages.generate import ConversationTypes

    backend = _backend("smollm2-135m")
    model = ConversationTypes(style).get(1)

    async def go():
        msgs = [
            [
                {
                    "role": "user",
                    "content": f"Write a short support chat about a late plant order {i}",
                }
            ]
            for i in range(4)
        ]
        res = await asyncio.gather(
            *[backend.chat(m, response_model=model, max_retries=1, max_tokens=240) for m in msgs],
            return_exceptions=True,
        )
        await backend.aclose()
        return res

    res = asyncio.run(go())
    for r in res:  # each is a valid conversation or a clean InvalidOutput, never a crash
        assert not isinstance(r, Exception) or type(r).__name__ == "InvalidOutput", r


def test_generate_with_a_local_teacher_accounts_for_every_plan_point(tiny_model_dir):
    """A random model writes nonsense: every planned point must still end up generated or
    rejected with a reason, through the batched local backend; when none passes, generate
    says so and fails."""
    from pathlib import Path

    from click.testing import CliRunner

    from distill.cli import cli
    from distill.runs import read_jsonl

    root = Path(__file__).resolve().parent.parent
    res = CliRunner().invoke(
        cli,
        [
            "generate",
            "--seeds",
            str(root / "seeds" / "greenleaf.jsonl"),
            "--n",
            "3",
            "--teacher",
            f"local:{tiny_model_dir}",
            "--max-reasks",
            "0",
            "--name",
            "tiny",
        ],  # fmt: skip
    )
    out = Path("outputs") / "tiny"
    gen = list(read_jsonl(out / "generated.jsonl")) if (out / "generated.jsonl").exists() else []
    rej = list(read_jsonl(out / "rejected.jsonl")) if (out / "rejected.jsonl").exists() else []
    planned = len(gen) + len(rej)
    if gen:
        assert res.exit_code == 0, res.output
    else:
        assert res.exit_code == 1 and f"none of the {planned} planned" in res.output
    assert len(gen) <= 3 and planned <= 9  # rejected points replaced, 3 x n at most
    assert all(r["stage"] == "generate" and r["reason"] for r in rej)


def test_the_grammar_keeps_field_order_so_the_customer_speaks_first():
    from distill.backends.structured import schema_text

    class Turn(BaseModel):
        user: str
        assistant: str

    text = schema_text(Turn)
    assert text.index('"user"') < text.index('"assistant"')
