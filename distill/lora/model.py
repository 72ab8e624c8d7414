"""The model side of training: LoRA on every linear projection, the precision, the loss
over supervised tokens only, and the eval loss."""

from __future__ import annotations

from typing import Any

from distill.errors import UsageError, require
from distill.lora.batches import collate, micro_batches
from distill.lora.config import LocalTrainConfig
from distill.lora.data import IGNORE, Encoded


def add_lora(model: Any, cfg: LocalTrainConfig) -> Any:
    peft = require("peft", "local", "local LoRA training")
    lora = peft.LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, lora)


def resolve_precision(precision: str, device: str) -> str:
    """auto -> bf16 on a GPU with bfloat16, else fp32. On CPU, even with AVX512-BF16,
    benchmarks/train_local.py measured bf16 autocast no faster for a 135M model and its
    eval loss worse after one epoch, so CPU stays fp32 unless asked."""
    if precision not in ("auto", "fp32", "bf16"):
        raise UsageError(f"precision {precision!r}: use auto, fp32 or bf16")
    if precision != "auto":
        return precision
    import torch

    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "fp32"


def loss_sum(model: Any, batch: dict[str, Any], precision: str = "fp32") -> tuple[Any, int]:
    """(summed cross-entropy over supervised tokens, their count)."""
    import torch.nn.functional as F

    logits, targets, keep = supervised_logits(model, batch, precision)
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())


def supervised_logits(
    model: Any, batch: dict[str, Any], precision: str = "fp32"
) -> tuple[Any, Any, Any]:
    """(logits at the positions that predict a supervised token, the shifted targets, the
    mask of those positions). The output head runs only on those positions: on a 49k
    vocabulary that head is a fifth of the forward pass and most of its memory."""
    import torch

    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    inner = model.get_base_model()
    decoder = getattr(inner, inner.base_model_prefix, None)
    head = inner.get_output_embeddings()
    device_type = batch["input_ids"].device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        if decoder is not None and head is not None:
            hidden = decoder(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                use_cache=False,
            ).last_hidden_state
            logits = head(hidden[:, :-1][keep])
        else:  # an architecture without the usual decoder/head split: full logits
            logits = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                use_cache=False,
            ).logits[:, :-1][keep]
    return logits, targets, keep


def evaluate(
    model: Any,
    data: list[Encoded],
    budget: int,
    pad_id: int,
    device: str,
    precision: str = "fp32",
) -> float:
    """Mean loss per supervised token over `data` (dropout off, no gradients)."""
    import torch

    if not data:
        return float("nan")
    lengths = [len(e.ids) for e in data]
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for mb in micro_batches(list(range(len(data))), lengths, budget):
            s, n = loss_sum(model, collate([data[i] for i in mb], pad_id, device), precision)
            total += float(s)
            count += n
    model.train(was_training)
    return total / max(count, 1)
