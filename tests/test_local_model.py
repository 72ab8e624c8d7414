"""Local models in one process: loading an adapter never changes what the base model says."""

from __future__ import annotations

from pathlib import Path

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


def test_converting_the_embedded_model_shows_our_progress_not_a_raw_tqdm_bar(
    tmp_path, monkeypatch, capsys
):
    """The conversion (about 30 s) reports on stderr in distill's own words, and transformers'
    tqdm bar over the GGUF tensors, printed raw mid-line, stays off the screen."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    import distill.progress as progress
    from distill import local_model

    class Tokenizer:
        def save_pretrained(self, folder):
            (Path(folder) / "tokenizer.json").write_text("{}")

    class Model:
        config = type("Config", (), {})()

        def save_pretrained(self, folder):
            (Path(folder) / "config.json").write_text("{}")
            (Path(folder) / "model.safetensors").write_bytes(b"")

    def load_model(*args, **kwargs):
        from transformers import modeling_gguf_pytorch_utils as gguf_utils

        for _ in gguf_utils.tqdm(range(30), desc="Converting and de-quantizing GGUF tensors..."):
            pass
        return Model()

    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(local_model, "_embedded_gguf", lambda name: tmp_path / "model.gguf")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Tokenizer())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", load_model)
    monkeypatch.setattr(progress._Lines, "QUIET_S", 0.0)  # as slow as the real one

    folder = local_model.model_dir("smollm2-135m")
    assert (folder / "config.json").exists() and (folder / "tokenizer.json").exists()
    err = capsys.readouterr().err
    assert "de-quantizing" not in err and "it/s" not in err, err
    assert "converting the embedded model model.gguf once (about 30 s): 33% (1 of 3)" in err
    assert "converting the embedded model model.gguf once (about 30 s): done, 3 in " in err
