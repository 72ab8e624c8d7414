"""Local LoRA training: `distill train --student local:NAME|PATH`.

The free path: a LoRA adapter trained on this machine with transformers + peft, handed to
Ollama. The loop reads top to bottom (nanoGPT style, no Trainer): examples are rendered with the
model's own chat template and only assistant tokens are supervised; batches are grouped by
length under a token budget so CPU time is not spent on padding; the loss head runs only on the
supervised positions; AdamW with warmup + cosine decay; eval loss on eval.jsonl each epoch; the
best adapter is kept and training stops when eval loss rises for `patience` epochs. A checkpoint
(adapter, optimizer, RNG, position) is written atomically each epoch and every couple of
minutes, so a killed run resumes where it was.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.errors import InputError, RunError, UsageError, require
from distill.runs import (
    Run,
    append_jsonl,
    atomic_file,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_jsonl,
    sha256_file,
    sha256_text,
)

IGNORE = -100  # label of a token the loss skips
MIN_TRAIN_EXAMPLES = 10  # the same floor OpenAI applies; fewer cannot teach a style
SPLIT_HINT = "run `distill split` first"


@dataclass
class LocalTrainConfig:
    """Every knob of a local run. The fields above `checkpoint_seconds` decide the result and
    are hashed (with the data) to tell a finished or resumable run from a new one."""

    base: str
    epochs: int
    lr: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"
    batch_tokens: int = 1024  # padded tokens per optimiser step (~8 short chats)
    micro_batch_tokens: int = 512  # padded tokens per forward pass (bounds activation memory)
    precision: str = "fp32"  # or bf16: autocast matmuls to bfloat16
    max_seq_len: int = 1024
    patience: int = 1
    seed: int = 0
    warmup_ratio: float = 0.1
    min_lr_ratio: float = 0.1  # cosine decays to lr x this
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # not hashed: where and how often, never what
    checkpoint_seconds: float = field(default=120.0, metadata={"hash": False})
    checkpoint_every: int = field(default=0, metadata={"hash": False})  # steps; 0 = time only
    device: str = field(default="cpu", metadata={"hash": False})

    def hyperparameters(self) -> dict[str, Any]:
        skip = {"checkpoint_seconds", "checkpoint_every", "device"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


# -- inputs ------------------------------------------------------------------------------------


def student_slug(name: str) -> str:
    """`smollm2-135m` -> local-smollm2-135m; a path -> local-<its folder name>."""
    base = Path(name).expanduser().name if ("/" in name or os.sep in name) else name
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "model"
    return f"local-{base.lower()}"


def load_examples(path: Path, *, is_train: bool) -> list[list[dict[str, Any]]]:
    """The messages of every example, after the file passes validation (one-line error if not)."""
    try:
        from distill.stages.validate import validate_file
    except ImportError:  # pragma: no cover - validate ships with distill
        validate_file = None  # type: ignore[assignment]
    if validate_file is not None:
        report = validate_file(path, model="local:student")
        errors = [p for p in report.errors if is_train or p.code != "too-few-examples"]
        if errors:
            more = report.error_count - 1
            tail = f" (and {more} more; `distill validate {path}` lists them)" if more > 0 else ""
            raise InputError(f"{errors[0].format(str(path))}{tail}")
    from pydantic import ValidationError

    from distill.records import Conversation

    out: list[list[dict[str, Any]]] = []
    for lineno, obj in enumerate(read_jsonl(path), 1):
        try:
            conv = Conversation.model_validate({"messages": obj.get("messages")})
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise InputError(f"{path}:{lineno}: {where}: {first['msg']}; fix the line") from None
        if not any(m.role == "assistant" for m in conv.messages):
            raise InputError(f"{path}:{lineno}: no assistant message; nothing to learn from")
        out.append([m.to_chat() for m in conv.messages])
    if is_train and len(out) < MIN_TRAIN_EXAMPLES:
        raise InputError(
            f"{path}: {len(out)} example(s); local training needs at least "
            f"{MIN_TRAIN_EXAMPLES} (50 to 100 is a good start): generate more, then {SPLIT_HINT}"
        )
    return out


def default_epochs(n_examples: int) -> int:
    """OpenAI's rule: 3 epochs, scaled so epochs x examples lands in 100..25,000."""
    try:
        from distill.stages.validate import default_epochs as rule

        return int(rule(n_examples))
    except ImportError:  # pragma: no cover
        if n_examples * 3 < 100:
            return min(25, math.ceil(100 / n_examples))
        if n_examples * 3 > 25_000:
            return max(1, 25_000 // n_examples)
        return 3


# -- tokenization: the model's own template, labels on assistant tokens only ---------------------


class TemplateMismatch(ValueError):
    """The chat template does not render a conversation as a growing prefix."""


def encode_conversation(tok: Any, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """(input ids, labels) with labels = ids on assistant replies (weight != 0) and IGNORE
    elsewhere, rendered with the tokenizer's own chat template.

    Works for any template without {% generation %} markers: render the prefix up to each
    message (with the generation prompt before an assistant reply), check that every render
    extends the previous one, and tokenize the pieces one by one, which is also how the model
    meets them at inference: prompt tokens first, then the reply it generates. The reply's end
    token (<|im_end|>, </s>, ...) is supervised so the model learns to stop; trailing
    whitespace after it is not.
    """

    def render(msgs: list[dict[str, Any]], gen: bool) -> str:
        if not msgs and not gen:
            return ""
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    plain = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    pieces: list[tuple[str, bool]] = []  # (text, supervised)
    done = ""
    for i, msg in enumerate(messages):
        if msg["role"] == "assistant":
            prompt = render(plain[:i], True)
            if not prompt.startswith(done):
                raise TemplateMismatch(f"the prompt before message {i + 1} rewrites earlier text")
            pieces.append((prompt[len(done) :], False))
            done = prompt
        full = render(plain[: i + 1], False)
        if not full.startswith(done):
            raise TemplateMismatch(f"message {i + 1} rewrites earlier text")
        text = full[len(done) :]
        if msg["role"] == "assistant" and msg.get("weight", 1) != 0:
            body = text.rstrip()
            pieces.append((body, True))
            pieces.append((text[len(body) :], False))
        else:
            pieces.append((text, False))
        done = full
    ids: list[int] = []
    labels: list[int] = []
    for text, supervised in pieces:
        if not text:
            continue
        piece = tok(text, add_special_tokens=False)["input_ids"]
        if supervised and tok.decode(piece).strip() != text.strip():
            raise TemplateMismatch(f"a reply does not survive tokenize/decode: {text[:40]!r}")
        ids += piece
        labels += piece if supervised else [IGNORE] * len(piece)
    return ids, labels


@dataclass
class Encoded:
    ids: list[int]
    labels: list[int]

    @property
    def n_supervised(self) -> int:
        return sum(1 for x in self.labels[1:] if x != IGNORE)


def encode_all(
    tok: Any, examples: list[list[dict[str, Any]]], max_seq_len: int
) -> tuple[list[Encoded], list[tuple[int, str]]]:
    """Encoded examples and (index, reason) for those that cannot be trained on."""
    kept: list[Encoded] = []
    dropped: list[tuple[int, str]] = []
    for i, msgs in enumerate(examples):
        try:
            ids, labels = encode_conversation(tok, msgs)
        except TemplateMismatch as e:
            dropped.append((i, f"chat template: {e}"))
            continue
        except Exception as e:  # a template that raises on this conversation (tool calls, ...)
            dropped.append((i, f"chat template failed: {type(e).__name__}: {e}"))
            continue
        enc = Encoded(ids[:max_seq_len], labels[:max_seq_len])
        if enc.n_supervised == 0:
            reason = (
                f"no assistant tokens within --max-seq-len {max_seq_len}"
                if len(ids) > max_seq_len
                else "every assistant message has weight 0"
            )
            dropped.append((i, reason))
            continue
        kept.append(enc)
    return kept, dropped


# -- batching: length-grouped under a token budget -----------------------------------------------


def plan_epoch(lengths: list[int], batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """Optimiser steps for one epoch, each a list of example indices whose padded size
    (count x longest) fits `batch_tokens`. Examples are shuffled, sorted by length within
    chunks so neighbours pad little, and the steps shuffled again. Same seed, same plan."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = 512
    steps: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: -lengths[i])
        cur: list[int] = []
        for i in part:
            longest = max([lengths[j] for j in cur] + [lengths[i]])
            if cur and (len(cur) + 1) * longest > batch_tokens:
                steps.append(cur)
                cur = []
            cur.append(i)
        if cur:
            steps.append(cur)
    rng.shuffle(steps)
    return steps


def micro_batches(step: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """Split one step into forward passes of at most `budget` padded tokens."""
    out: list[list[int]] = []
    cur: list[int] = []
    for i in sorted(step, key=lambda j: -lengths[j]):
        longest = max([lengths[j] for j in cur] + [lengths[i]])
        if cur and (len(cur) + 1) * longest > budget:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def collate(examples: list[Encoded], pad_id: int, device: str) -> dict[str, Any]:
    """Right-pad to the longest example in the batch (dynamic padding)."""
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.ids)
        ids[row, :n] = torch.tensor(e.ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {
        "input_ids": ids.to(device),
        "labels": labels.to(device),
        "attention_mask": mask.to(device),
    }


# -- the model -----------------------------------------------------------------------------------


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
    """(summed cross-entropy over supervised tokens, their count). The output head runs only
    on the positions that predict a supervised token: on a 49k vocabulary that head is a
    fifth of the forward pass and most of its memory."""
    import torch
    import torch.nn.functional as F

    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    n = int(keep.sum())
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
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), n


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


def lr_at(step: int, total: int, cfg: LocalTrainConfig) -> float:
    """Linear warmup, then cosine decay to lr x min_lr_ratio."""
    warmup = max(1, round(total * cfg.warmup_ratio))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def trainable_state(model: Any) -> dict[str, Any]:
    return {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}


def load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    params = dict(model.named_parameters())
    missing = [k for k in state if k not in params]
    if missing:
        raise RunError(f"checkpoint does not fit this model ({missing[0]}); delete it to restart")
    import torch

    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


def _replace_dir(tmp: Path, target: Path) -> None:
    """Swap a fully written folder into place; a kill leaves the old or the new one."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where training is: saved in the checkpoint, restored on resume."""

    step: int = 0  # optimiser steps done
    epoch: int = 0  # epochs finished
    batch_in_epoch: int = 0  # steps done inside the current epoch
    best_eval_loss: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    epoch_loss_sum: float = 0.0
    epoch_tokens: int = 0
    last_train_loss: float = float("nan")
    seconds: float = 0.0
    train_tokens: int = 0
    stopped_early: bool = False
    base_eval_loss: float = float("nan")  # before any training: the yardstick


Hook = Callable[[dict[str, Any]], None]


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

    def opt(key: str, default: Any) -> Any:
        v = opts.get(key)
        return default if v is None else v

    lora_r = int(opt("lora_r", 16))
    cfg = LocalTrainConfig(
        base=name,
        epochs=int(opt("epochs", default_epochs(len(train_msgs)))),
        lr=float(opt("lr", 2e-4)),
        lora_r=lora_r,
        lora_alpha=int(opt("lora_alpha", 2 * lora_r)),
        lora_dropout=float(opt("lora_dropout", 0.05)),
        batch_tokens=int(opt("batch_tokens", 1024)),
        max_seq_len=int(opt("max_seq_len", 1024)),
        patience=int(opt("patience", 1)),
        seed=int(opt("seed", 0)),
        checkpoint_seconds=float(opt("checkpoint_seconds", 120.0)),
        checkpoint_every=int(opt("checkpoint_every", 0)),
    )
    cfg.micro_batch_tokens = int(opt("micro_batch_tokens", min(cfg.batch_tokens, 512)))
    for label, value, low in (
        ("--epochs", cfg.epochs, 1),
        ("--lora-r", cfg.lora_r, 1),
        ("--lora-alpha", cfg.lora_alpha, 1),
        ("--batch-tokens", cfg.batch_tokens, 16),
        ("--max-seq-len", cfg.max_seq_len, 8),
        ("--patience", cfg.patience, 1),
    ):
        if value < low:
            raise UsageError(f"{label} {value}: must be at least {low}")
    if not 0 < cfg.lr < 1:
        raise UsageError(f"--lr {cfg.lr}: use a small positive rate such as 2e-4")
    if not 0 <= cfg.lora_dropout < 1:
        raise UsageError(f"--lora-dropout {cfg.lora_dropout}: must be in [0, 1)")

    # 2. the base model folder (a missing path fails here, before torch loads)
    from distill import local_model

    base_dir = local_model.model_dir(name).resolve()
    require("torch", "local", "local LoRA training")
    require("peft", "local", "local LoRA training")
    cfg.device = local_model.resolve_device(opt("device", "auto"))
    cfg.precision = resolve_precision(opt("precision", "auto"), cfg.device)

    out = run.path / "train" / student_slug(name)
    ckpt_dir = out / "checkpoint"
    inputs = {
        "train_sha256": sha256_file(train_path),
        "eval_sha256": sha256_file(eval_path),
        "base_config_sha256": sha256_file(base_dir / "config.json"),
    }
    key = sha256_text(json.dumps({"inputs": inputs, "hp": cfg.hyperparameters()}, sort_keys=True))

    # 3. already done with these inputs? report, do not redo
    done = _finished(out, key)
    if done is not None:
        if opts.get("merge") and not (out / "merged" / "config.json").exists():
            done["merged"] = str(_merge_saved(out, base_dir))
            console.print(f"merged model: {done['merged']}", soft_wrap=True)
        run.record_stage("train", "done", **done)
        run.update_manifest(student={"model": done["student_model"], "base": f"local:{name}"})
        console.print(
            f"already trained: {out / 'adapter'} (train/eval files and settings unchanged; "
            f"delete {out} to train again)",
            soft_wrap=True,
        )
        _print_ollama(console, run, name, out)
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
        summary = _train(
            console, cfg, base_dir, tok, train_data, eval_data, out, ckpt_dir, key, opts
        )
    except BaseException as e:
        status = "interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "failed"
        run.record_stage("train", status, error=f"{type(e).__name__}: {e}"[:300])
        raise

    # 5. outputs: adapter (best epoch), Modelfile, loss curve, manifest
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
    _write_modelfile(out, base_dir)
    _plot_losses(out)
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
        f"{'n/a' if best is None else f'{best:.3f}'} (base {_fmt(summary['base_eval_loss'])})"
    )
    console.print(f"adapter: {adapter}", soft_wrap=True)
    _print_ollama(console, run, name, out)
    return result


def _merge_saved(out: Path, base_dir: Path) -> Path:
    """merged/ from a finished run's adapter (for --merge after the training)."""
    peft = require("peft", "local", "merging a LoRA adapter")
    from distill import local_model

    model, tok = local_model.load(str(base_dir))
    merged = peft.PeftModel.from_pretrained(model, str(out / "adapter")).merge_and_unload()
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".merged."))
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    _replace_dir(tmp, out / "merged")
    return (out / "merged").resolve()


def _record(messages: list[dict[str, Any]]) -> dict[str, Any]:
    from distill.records import content_id

    return {"id": content_id(messages), "messages": messages}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"


def _finished(out: Path, key: str) -> dict[str, Any] | None:
    cfg_path = out / "config.json"
    if not cfg_path.exists():
        return None
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    result = config.get("result")
    if config.get("key") != key or not result:
        return None
    if not (out / "adapter" / "adapter_model.safetensors").exists():
        return None
    return result


def _train(
    console: Any,
    cfg: LocalTrainConfig,
    base_dir: Path,
    tok: Any,
    train_data: list[Encoded],
    eval_data: list[Encoded],
    out: Path,
    ckpt_dir: Path,
    key: str,
    opts: dict[str, Any],
) -> dict[str, Any]:
    """The training loop. Returns losses, epochs and time; leaves out/adapter (best epoch)."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    from distill import local_model

    on_step: Hook | None = opts.get("on_step")
    torch.manual_seed(cfg.seed)
    if cfg.device == "cpu" and torch.get_num_threads() < (os.cpu_count() or 1):
        torch.set_num_threads(os.cpu_count() or 1)

    # plan every epoch up front: deterministic, so a resumed run sees the same batches
    lengths = [len(e.ids) for e in train_data]
    plans = [plan_epoch(lengths, cfg.batch_tokens, cfg.seed, ep) for ep in range(cfg.epochs)]
    total_steps = sum(len(p) for p in plans)

    transformers = require("transformers", "local", "local LoRA training")
    transformers.utils.logging.disable_progress_bar()
    model, _ = local_model.load(str(base_dir), device=cfg.device)
    model = add_lora(model, cfg)
    model.peft_config["default"].base_model_name_or_path = str(base_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    pad_id = tok.pad_token_id

    # resume: the checkpoint holds adapter, optimizer, RNG and position; the lr schedule is a
    # pure function of the step
    state = Progress()
    ckpt_file = ckpt_dir / "state.pt"
    best_file = ckpt_dir / "best.pt"
    log_path = out / "log.jsonl"
    if ckpt_file.exists():
        saved = torch.load(ckpt_file, map_location="cpu", weights_only=False)
        if saved.get("key") == key:
            load_trainable_state(model, saved["trainable"])
            optimizer.load_state_dict(saved["optimizer"])
            state = Progress(**saved["progress"])
            torch.set_rng_state(saved["rng"])
            if saved.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(saved["cuda_rng"])
            # drop log lines written after the checkpoint: they will be written again
            kept = [r for r in read_jsonl(log_path) if r["step"] <= state.step]
            atomic_write_jsonl(log_path, kept)
            console.print(
                f"resuming from step {state.step}/{total_steps} (epoch {state.epoch + 1})"
            )
        else:
            console.print("note: inputs or settings changed since the checkpoint; starting over")
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    if state.step == 0:
        atomic_write_jsonl(log_path, [])
        state.base_eval_loss = evaluate(
            model, eval_data, cfg.micro_batch_tokens, pad_id, cfg.device, cfg.precision
        )
        base = None if math.isnan(state.base_eval_loss) else round(state.base_eval_loss, 5)
        append_jsonl(log_path, [{"step": 0, "epoch": 0, "eval_loss": base}])

    def save_checkpoint() -> None:
        _atomic_torch_save(
            {
                "key": key,
                "trainable": trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "progress": asdict(state),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if cfg.device == "cuda" else None,
            },
            ckpt_file,
        )

    last_save = time.monotonic()
    model.train()
    bar = Bar(
        TextColumn("[bold]train[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with bar:
        task = bar.add_task(
            f"epoch {state.epoch + 1}/{cfg.epochs}",
            total=total_steps,
            completed=state.step,
            status="",
        )
        while state.epoch < cfg.epochs and not state.stopped_early:
            plan = plans[state.epoch]
            while state.batch_in_epoch < len(plan):
                # one optimiser step: forward/backward over micro-batches, clip, AdamW
                t0 = time.perf_counter()
                step_examples = plan[state.batch_in_epoch]
                n_target = sum(train_data[i].n_supervised for i in step_examples)
                lr = lr_at(state.step, total_steps, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step_loss, step_tokens = 0.0, 0
                for mb in micro_batches(step_examples, lengths, cfg.micro_batch_tokens):
                    batch = collate([train_data[i] for i in mb], pad_id, cfg.device)
                    s, _ = loss_sum(model, batch, cfg.precision)
                    (s / n_target).backward()
                    step_loss += float(s.detach())
                    step_tokens += sum(lengths[i] for i in mb)
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                dt = time.perf_counter() - t0

                state.step += 1
                state.batch_in_epoch += 1
                state.seconds += dt
                state.train_tokens += step_tokens
                state.epoch_loss_sum += step_loss
                state.epoch_tokens += n_target
                state.last_train_loss = step_loss / n_target
                row = {
                    "step": state.step,
                    "epoch": round(state.epoch + state.batch_in_epoch / len(plan), 4),
                    "train_loss": round(state.last_train_loss, 5),
                    "lr": lr,
                    "tokens_per_s": round(step_tokens / dt, 1),
                }
                append_jsonl(log_path, [row])
                bar.update(
                    task,
                    advance=1,
                    description=f"epoch {state.epoch + 1}/{cfg.epochs}",
                    status=f"loss {state.last_train_loss:.3f}",
                )
                if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                    save_checkpoint()
                    last_save = time.monotonic()
                elif time.monotonic() - last_save > cfg.checkpoint_seconds:
                    save_checkpoint()
                    last_save = time.monotonic()
                if on_step is not None:
                    on_step(row)

            # end of epoch: eval loss, keep the best, stop when it keeps rising
            eval_loss = evaluate(
                model, eval_data, cfg.micro_batch_tokens, pad_id, cfg.device, cfg.precision
            )
            epoch_train = state.epoch_loss_sum / max(state.epoch_tokens, 1)
            state.epoch += 1
            state.batch_in_epoch = 0
            state.epoch_loss_sum, state.epoch_tokens = 0.0, 0
            state.last_train_loss = epoch_train  # the summary reports the last epoch's mean
            if not eval_data or eval_loss < state.best_eval_loss:
                state.best_eval_loss = eval_loss if eval_data else float("inf")
                state.best_epoch = state.epoch
                state.bad_epochs = 0
                _atomic_torch_save(trainable_state(model), best_file)
            else:
                state.bad_epochs += 1
                if state.bad_epochs >= cfg.patience and state.epoch < cfg.epochs:
                    state.stopped_early = True
            append_jsonl(
                log_path,
                [
                    {
                        "step": state.step,
                        "epoch": state.epoch,
                        "train_loss": round(epoch_train, 5),
                        "eval_loss": None if math.isnan(eval_loss) else round(eval_loss, 5),
                    }
                ],
            )
            bar.console.print(
                f"epoch {state.epoch}: train loss {epoch_train:.3f}, eval loss {_fmt(eval_loss)}"
                + (" (best)" if state.best_epoch == state.epoch else "")
                + (" - stopping: eval loss rose" if state.stopped_early else "")
            )
            save_checkpoint()
            last_save = time.monotonic()
            if on_step is not None:
                on_step({"step": state.step, "epoch": state.epoch, "eval_loss": eval_loss})

    # the best epoch's weights become the adapter
    load_trainable_state(model, torch.load(best_file, map_location="cpu", weights_only=True))
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".adapter."))
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    _replace_dir(tmp, out / "adapter")
    merged = False
    if opts.get("merge"):
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".merged."))
        full = model.merge_and_unload()
        full.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        _replace_dir(tmp, out / "merged")
        merged = True
    return {
        "best_eval_loss": None if math.isinf(state.best_eval_loss) else state.best_eval_loss,
        "best_epoch": state.best_epoch,
        "base_eval_loss": None if math.isnan(state.base_eval_loss) else state.base_eval_loss,
        "final_train_loss": state.last_train_loss,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "steps": state.step,
        "seconds": round(state.seconds, 2),
        "tokens_per_s": round(state.train_tokens / max(state.seconds, 1e-9), 1),
        "merged": merged,
    }


# -- outputs ---------------------------------------------------------------------------------------


def _write_modelfile(out: Path, base_dir: Path) -> None:
    atomic_write_text(
        out / "Modelfile",
        "# Ollama: the base model's weights plus the LoRA adapter trained by distill.\n"
        f"FROM {base_dir}\n"
        "ADAPTER ./adapter\n",
    )


def ollama_name(run: Run, name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", f"{run.name}-{student_slug(name)[6:]}".lower())


def _print_ollama(console: Any, run: Run, name: str, out: Path) -> None:
    console.print(
        f"to serve it with Ollama: ollama create {ollama_name(run, name)} -f {out / 'Modelfile'}",
        soft_wrap=True,
    )


def _plot_losses(out: Path) -> None:
    """loss.png: train loss per step and eval loss per epoch. Skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = list(read_jsonl(out / "log.jsonl"))
    steps = [r for r in rows if "lr" in r]
    evals = [r for r in rows if r.get("eval_loss") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([r["step"] for r in steps], [r["train_loss"] for r in steps], label="train", lw=1)
    ax.plot(
        [r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval (held out)"
    )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss per assistant token")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".loss.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out / "loss.png")
