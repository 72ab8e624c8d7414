"""Local models in one process: loading an adapter never changes what the base model says."""

from __future__ import annotations

import pytest


def test_loading_an_adapter_leaves_the_shared_base_untouched(tiny_model_dir, tmp_path):
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from distill.backends.local import load_model

    torch.manual_seed(1)
    cfg = LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), cfg).save_pretrained(
        tmp_path / "adapter"
    )
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    base, _ = load_model(str(tiny_model_dir))
    with torch.no_grad():
        before = base(ids).logits.clone()
    student, _ = load_model(str(tmp_path / "adapter"))
    with torch.no_grad():
        after = base(ids).logits
        student_logits = student(ids).logits
    assert torch.equal(before, after), "the base now answers as the student"
    assert not torch.allclose(before, student_logits), "the adapter must change the student"
