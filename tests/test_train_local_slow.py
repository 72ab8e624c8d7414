"""SmolLM2-135M trained on the GreenLeaf seeds moves toward the style (minutes of CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds" / "greenleaf.jsonl"


def replies(model, tok, prompts: list[list[dict]]) -> list[str]:
    import torch

    out = []
    for msgs in prompts:
        ids = tok.apply_chat_template(
            msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=48, do_sample=False)
        out.append(tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return out


def test_smollm2_on_greenleaf_seeds_moves_toward_the_style(make_run, style):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    if not SEEDS.exists():
        pytest.skip("seeds/greenleaf.jsonl not written yet")
    from click.testing import CliRunner
    from peft import PeftModel

    from distill import local_model
    from distill.cli import cli

    rows = [json.loads(line) for line in SEEDS.read_text().splitlines() if line.strip()]
    held_out = rows[2::4]
    train = [r for i, r in enumerate(rows) if i % 4 != 2]
    assert len(train) >= 10
    run = make_run("greenleaf", train__jsonl=train, eval__jsonl=held_out)
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--run",
            str(run.path),
            "--student",
            "local:smollm2-135m",
            "--epochs",
            "4",
            "--batch-tokens",
            "256",
            "--lr",
            "5e-4",
        ],
    )
    assert result.exit_code == 0, result.output
    stage = run.stage("train")
    print(
        f"\ntrained {stage['steps']} steps, {stage['epochs_run']} epochs in {stage['seconds']} s "
        f"({stage['tokens_per_s']} tok/s); eval loss {stage['base_eval_loss']:.3f} -> "
        f"{stage['best_eval_loss']:.3f}"
    )
    assert stage["best_eval_loss"] < stage["base_eval_loss"] - 0.1  # held-out loss falls

    base, tok = local_model.load("smollm2-135m")
    prompts = []
    for r in held_out:
        first = next(i for i, m in enumerate(r["messages"]) if m["role"] == "assistant")
        prompts.append(r["messages"][:first])
    before = replies(base, tok, prompts)
    student = PeftModel.from_pretrained(base, stage["adapter"]).eval()
    after = replies(student, tok, prompts)

    def broken(texts: list[str]) -> int:
        return sum(len(style.check_reply(t)) for t in texts)

    print(f"style problems: base {broken(before)}, student {broken(after)}")
    for b, a in zip(before, after, strict=True):
        print(f"  base:    {b!r}\n  student: {a!r}")
    assert broken(after) < broken(before), (before, after)
