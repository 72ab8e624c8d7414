"""`distill train --method dpo`: preference tuning on the run's pairs.jsonl (`distill pairs`).

Local: a LoRA round with the DPO loss (distill.lora.dpo), starting from the run's SFT adapter,
which is also the reference (the base when the run has none). The adapter lives beside the SFT
one, in train/<student>-dpo/, with the same checkpoints, resume and "already trained" check as
local SFT. Hosted: the same job code as supervised fine-tunes (distill.stages.train_hosted),
with OpenAI's `method: {type: "dpo"}`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.errors import InputError, RunError, UsageError, require
from distill.models import parse_model
from distill.runs import Run, atomic_write_json, sha256_file, sha256_text
from distill.stages.pairs import PAIRS_FILE, PAIRS_HINT, dpo_reference, load_pairs

MIN_PAIRS = 10  # the floor supervised training applies to examples

STAGE = "dpo"


def pick_dpo_student(run: Run, student: str | None) -> tuple[str, str | None, str]:
    """(model to tune, its reference/starting point or None, why). The default is the run's
    SFT student: local:<adapter> tunes that adapter on its base; an openai: model tunes it."""
    sft = dpo_reference(run)
    trained = run.manifest.get("student") or {}
    if student is None:
        if not sft:
            raise RunError(
                f"{run.path}: no trained student to start DPO from; run `distill train` first, "
                "or pass --student MODEL to tune a base model directly"
            )
        ref = parse_model(sft)
        if ref.provider == "local":
            base = (run.manifest.get("preference") or {}).get("base") or trained.get("base")
            if not base:
                raise RunError(f"{run.path}: the trained student {sft} records no base model")
            return str(base), sft, "the run's trained SFT student"
        return sft, sft, "the run's trained SFT student"
    ref = parse_model(student)
    if ref.provider == "local" and sft and parse_model(sft).provider == "local":
        base = (run.manifest.get("preference") or {}).get("base") or trained.get("base")
        if base == f"local:{ref.name}":
            return student, sft, "the run's SFT adapter on this base"
    return student, None, "no SFT student of this model in the run: the base is the reference"


def train_dpo_local(run: Run, name: str, reference: str | None, **opts: Any) -> dict[str, Any]:
    """Train a DPO adapter for local:`name` from `reference` (local:<SFT adapter> or None)."""
    from rich.console import Console

    from distill import local_model
    from distill.lora.dpo import DPOTrainConfig, encode_pairs, train_dpo
    from distill.lora.outputs import drop_modelfile, finished, student_slug

    console = Console(stderr=True, highlight=False)
    if opts.get("attach") or opts.get("cancel"):
        raise UsageError("--attach and --cancel act on hosted jobs; a local run has none")
    pairs_path = run.require(PAIRS_FILE, PAIRS_HINT)
    pairs = load_pairs(pairs_path)
    if len(pairs) < MIN_PAIRS:
        raise InputError(
            f"{pairs_path}: {len(pairs)} pair(s); DPO needs at least {MIN_PAIRS}: see why the "
            "others were dropped in rejected.jsonl (stage pairs), generate more, or pass "
            "`distill pairs --student` a weaker model"
        )
    cfg = DPOTrainConfig.from_options(name, opts, len(pairs))
    assert isinstance(cfg, DPOTrainConfig)
    base_dir = local_model.model_dir(name).resolve()
    ref_dir: Path | None = None
    if reference is not None:
        ref_dir = Path(parse_model(reference).name).expanduser().resolve()
        if not (ref_dir / "adapter_model.safetensors").exists():
            raise RunError(
                f"{ref_dir}: the SFT adapter to start from is missing; run `distill train` again"
            )
    require("torch", "local", "local DPO training")
    require("peft", "local", "local DPO training")
    from distill.lora.model import resolve_precision

    cfg.device = local_model.resolve_device(cfg.device)
    cfg.precision = resolve_precision(cfg.precision, cfg.device)

    out = run.path / "train" / f"{student_slug(name)}-dpo"
    ckpt_dir = out / "checkpoint"
    inputs = {
        "pairs_sha256": sha256_file(pairs_path),
        "reference": str(ref_dir) if ref_dir else None,
        "reference_sha256": sha256_file(ref_dir / "adapter_model.safetensors") if ref_dir else None,
        "base_config_sha256": sha256_file(base_dir / "config.json"),
    }
    key = sha256_text(json.dumps({"inputs": inputs, "hp": cfg.hyperparameters()}, sort_keys=True))
    reference_model = reference or f"local:{name}"

    done = finished(out, key)
    if done is not None:
        _record(run, done, name, reference_model)
        console.print(
            f"already trained: {out / 'adapter'} (pairs, reference and settings unchanged; "
            f"delete {out} to train again)",
            soft_wrap=True,
        )
        return done

    transformers = require("transformers", "local", "local DPO training")
    tok = transformers.AutoTokenizer.from_pretrained(str(ref_dir or base_dir))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise InputError(f"{base_dir}: the tokenizer has no chat template; use an instruct model")
    encoded, dropped = encode_pairs(tok, pairs, cfg.max_seq_len)
    if dropped:
        if not (ckpt_dir / "state.pt").exists():  # a resumed run rejected them already
            run.reject(({"id": None, "pair": pairs[i]}, STAGE, why) for i, why in dropped)
        console.print(f"note: {len(dropped)} pair(s) cannot be encoded; reasons in rejected.jsonl")
    if len(encoded) < MIN_PAIRS:
        raise InputError(f"{pairs_path}: only {len(encoded)} pair(s) usable with {name}")

    atomic_write_json(
        out / "config.json",
        {
            "student": f"local:{name}",
            "method": "dpo",
            "base_dir": str(base_dir),
            "reference": reference_model,
            "hyperparameters": cfg.hyperparameters(),
            "device": cfg.device,
            "inputs": inputs,
            "key": key,
            "pairs": len(encoded),
        },
    )
    run.record_stage(STAGE, "running", student=f"local:{name}", reference=reference_model)
    console.print(
        f"DPO: {len(encoded)} pairs, {cfg.epochs} epoch(s), beta {cfg.beta}, lr {cfg.lr:g}; "
        f"reference and starting point: {reference_model}",
        soft_wrap=True,
    )
    try:
        summary = train_dpo(console, cfg, base_dir, ref_dir, tok, encoded, out, ckpt_dir, key, opts)
    except BaseException as e:
        status = "interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "failed"
        run.record_stage(STAGE, status, error=f"{type(e).__name__}: {e}"[:300])
        raise

    adapter = (out / "adapter").resolve()
    result = {
        "student": f"local:{name}",
        "method": "dpo",
        "base": f"local:{name}",
        "reference": reference_model,
        "adapter": str(adapter),
        "adapter_sha256": sha256_file(adapter / "adapter_model.safetensors"),
        "pairs": len(encoded),
        "hyperparameters": cfg.hyperparameters(),
        "device": cfg.device,
        "student_model": f"local:{adapter}",
        **summary,
    }
    drop_modelfile(out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    config["result"] = result
    atomic_write_json(out / "config.json", config)
    _record(run, result, name, reference_model)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    console.print(
        f"DPO trained {summary['epochs_run']} epoch(s) in {summary['seconds']:.0f} s: "
        f"DPO loss {summary['final_dpo_loss']:.3f}, reward accuracy "
        f"{summary['final_reward_accuracy']:.0%} on the training pairs"
    )
    console.print(f"adapter: {adapter}", soft_wrap=True)
    console.print("next: distill eval (base, SFT and SFT+DPO side by side)")
    return result


def _record(run: Run, result: dict[str, Any], name: str, reference: str) -> None:
    """The DPO student becomes the run's student; `preference` says what it was tuned from,
    so eval can put base, SFT and SFT+DPO side by side."""
    run.record_stage(STAGE, "done", **result)
    run.update_manifest(
        student={"model": result["student_model"], "base": f"local:{name}"},
        preference={
            "model": result["student_model"],
            "reference": reference,
            "base": f"local:{name}",
            "method": "dpo",
        },
    )


def train_dpo(
    run: Run, student: str | None, *, say: Callable[[str], None] = print, **opts: Any
) -> dict[str, Any]:
    """DPO on pairs.jsonl: local for local:NAME|PATH, hosted for OpenAI models. Without a
    student, the run's SFT student is tuned further (and is the reference)."""
    model, reference, why = pick_dpo_student(run, student)
    say(f"DPO student: {model} ({why}; pass --student to choose)")
    ref = parse_model(model)
    if ref.provider == "local":
        return train_dpo_local(run, ref.name, reference, **opts)
    if ref.provider != "openai":
        raise UsageError(
            f"cannot DPO-tune {model!r}: use a hosted model (gpt-4o-mini) or local:NAME|PATH"
        )
    from distill.stages.train_hosted import train_hosted

    return train_hosted(run, ref.name, method="dpo", **opts)
