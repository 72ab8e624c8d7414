"""Local LoRA training: `distill train --student local:NAME|PATH`.

The free path: a LoRA adapter trained on this machine with transformers + peft, handed to
Ollama. The loop reads top to bottom (nanoGPT style, no Trainer): examples are rendered with the
model's own chat template and only assistant tokens are supervised; batches are grouped by
length under a token budget so CPU time is not spent on padding; the loss head runs only on the
supervised positions; AdamW with warmup + cosine decay; eval loss on eval.jsonl each epoch; the
best adapter is kept and training stops when eval loss rises for `patience` epochs. A checkpoint
(adapter, optimizer, RNG, position) is written atomically each epoch and every couple of
minutes, so a killed run resumes where it was.

The parts are in distill.lora: config, data, batches, model, loop, checkpoint, outputs.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from distill.errors import InputError, RunError, UsageError, require
from distill.lora.batches import collate, micro_batches, plan_epoch
from distill.lora.config import LocalTrainConfig, local_help
from distill.lora.data import (
    IGNORE,
    MIN_TRAIN_EXAMPLES,
    SPLIT_HINT,
    Encoded,
    TemplateMismatch,
    encode_all,
    encode_conversation,
    load_examples,
)
from distill.lora.loop import fmt_loss
from distill.lora.loop import train as train_loop
from distill.lora.model import add_lora, evaluate, loss_sum, resolve_precision
from distill.lora.outputs import (
    drop_modelfile,
    finished,
    merge_saved,
    ollama_name,
    plot_losses,
    print_ollama,
    student_slug,
)
from distill.runs import Run, atomic_write_json, sha256_file, sha256_text
from distill.validation.tally import default_epochs


def train_local(run: Run, name: str, **opts: Any) -> dict[str, Any]:
    """Train a LoRA adapter for local:`name` on the run's train.jsonl; returns the summary
    recorded in the manifest. Options are `distill train`'s flags (None = default)."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    for flag, key in (
        ("--batch-size", "batch_size"),
        ("--lr-multiplier", "lr_multiplier"),
        ("--base-url", "base_url"),
        ("--suffix", "suffix"),
    ):
        if opts.get(key) is not None:
            console.print(f"note: {flag} is for hosted fine-tunes; local training ignores it")
    if opts.get("attach") or opts.get("cancel"):
        raise UsageError("--attach and --cancel act on hosted jobs; a local run has none")

    # 1. inputs: present and valid before anything heavy loads
    train_path, eval_path = run.file("train.jsonl"), run.file("eval.jsonl")
    for p in (train_path, eval_path):
        if not p.exists():
            raise RunError(f"{p}: missing; {SPLIT_HINT}")
    train_msgs = load_examples(train_path, is_train=True)
    eval_msgs = load_examples(eval_path, is_train=False)

    cfg = LocalTrainConfig.from_options(name, opts, len(train_msgs))

    # 2. the base model folder (a missing path fails here, before torch loads)
    from distill import local_model

    base_dir = local_model.model_dir(name).resolve()
    require("torch", "local", "local LoRA training")
    require("peft", "local", "local LoRA training")
    cfg.device = local_model.resolve_device(cfg.device)
    cfg.precision = resolve_precision(cfg.precision, cfg.device)

    out = run.path / "train" / student_slug(name)
    ckpt_dir = out / "checkpoint"
    inputs = {
        "train_sha256": sha256_file(train_path),
        "eval_sha256": sha256_file(eval_path),
        "base_config_sha256": sha256_file(base_dir / "config.json"),
    }
    key = sha256_text(json.dumps({"inputs": inputs, "hp": cfg.hyperparameters()}, sort_keys=True))

    # 3. already done with these inputs? report, do not redo
    done = finished(out, key)
    if done is not None:
        if opts.get("merge") and not (out / "merged" / "config.json").exists():
            done["merged"] = str(merge_saved(out, base_dir))
            console.print(f"merged model: {done['merged']}", soft_wrap=True)
        run.record_stage("train", "done", **done)
        run.update_manifest(student={"model": done["student_model"], "base": f"local:{name}"})
        console.print(
            f"already trained: {out / 'adapter'} (train/eval files and settings unchanged; "
            f"delete {out} to train again)",
            soft_wrap=True,
        )
        print_ollama(console, run, name, out)
        return done

    # 4. tokenizer and examples (cheap) before the model (slow)
    transformers = require("transformers", "local", "local LoRA training")
    tok = transformers.AutoTokenizer.from_pretrained(str(base_dir))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise InputError(f"{base_dir}: the tokenizer has no chat template; use an instruct model")
    train_data, dropped = encode_all(tok, train_msgs, cfg.max_seq_len)
    eval_data, eval_dropped = encode_all(tok, eval_msgs, cfg.max_seq_len)
    if dropped or eval_dropped:
        rows = [(_record(train_msgs[i]), "train", why) for i, why in dropped]
        rows += [(_record(eval_msgs[i]), "train", f"eval: {why}") for i, why in eval_dropped]
        if not (ckpt_dir / "state.pt").exists():  # a resumed run rejected them already
            run.reject(rows)
        console.print(
            f"note: {len(rows)} example(s) cannot be trained on with {name}'s chat template; "
            "reasons in rejected.jsonl"
        )
    if len(train_data) < MIN_TRAIN_EXAMPLES:
        raise InputError(
            f"{train_path}: only {len(train_data)} example(s) usable with {name} "
            f"(need {MIN_TRAIN_EXAMPLES}); see rejected.jsonl"
        )

    atomic_write_json(
        out / "config.json",
        {
            "student": f"local:{name}",
            "base_dir": str(base_dir),
            "hyperparameters": cfg.hyperparameters(),
            "device": cfg.device,
            "inputs": inputs,
            "key": key,
            "examples": {"train": len(train_data), "eval": len(eval_data)},
        },
    )
    run.record_stage("train", "running", student=f"local:{name}", base=f"local:{name}")

    try:
        summary = train_loop(
            console, cfg, base_dir, tok, train_data, eval_data, out, ckpt_dir, key, opts
        )
    except BaseException as e:
        status = "interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "failed"
        run.record_stage("train", status, error=f"{type(e).__name__}: {e}"[:300])
        raise

    # 5. outputs: adapter (best epoch), loss curve, manifest
    adapter = (out / "adapter").resolve()
    adapter_sha = sha256_file(adapter / "adapter_model.safetensors")
    result = {
        "student": f"local:{name}",
        "base": f"local:{name}",
        "base_dir": str(base_dir),
        "adapter": str(adapter),
        "adapter_sha256": adapter_sha,
        "hyperparameters": cfg.hyperparameters(),
        "device": cfg.device,
        "student_model": f"local:{adapter}",
        **summary,
    }
    if summary.get("merged"):
        result["merged"] = str((out / "merged").resolve())
    drop_modelfile(out)
    plot_losses(out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    config["result"] = result
    atomic_write_json(out / "config.json", config)
    run.record_stage("train", "done", **result)
    run.update_manifest(student={"model": f"local:{adapter}", "base": f"local:{name}"})
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    best = summary["best_eval_loss"]
    console.print(
        f"trained {summary['epochs_run']} epoch(s) in {summary['seconds']:.0f} s: "
        f"train loss {summary['final_train_loss']:.3f}, best eval loss "
        f"{'n/a' if best is None else f'{best:.3f}'} (base {fmt_loss(summary['base_eval_loss'])})"
    )
    console.print(f"adapter: {adapter}", soft_wrap=True)
    print_ollama(console, run, name, out)
    return result


def _record(messages: list[dict[str, Any]]) -> dict[str, Any]:
    from distill.records import content_id

    return {"id": content_id(messages), "messages": messages}


__all__ = [
    "IGNORE",
    "Encoded",
    "LocalTrainConfig",
    "TemplateMismatch",
    "add_lora",
    "collate",
    "default_epochs",
    "encode_all",
    "encode_conversation",
    "evaluate",
    "load_examples",
    "local_help",
    "loss_sum",
    "micro_batches",
    "ollama_name",
    "plan_epoch",
    "student_slug",
    "train_local",
]
