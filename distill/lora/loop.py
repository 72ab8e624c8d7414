"""The training loop, top to bottom (nanoGPT style, no Trainer): AdamW with warmup and cosine
decay, eval loss each epoch, the best epoch's adapter kept, early stop when eval loss rises
for `patience` epochs, and a checkpoint (adapter, optimizer, RNG, position) each epoch and
every couple of minutes."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distill.errors import require
from distill.lora.batches import collate, micro_batches, plan_epoch
from distill.lora.checkpoint import (
    atomic_torch_save,
    load_trainable_state,
    replace_dir,
    trainable_state,
)
from distill.lora.config import LocalTrainConfig
from distill.lora.data import Encoded
from distill.lora.model import add_lora, evaluate, loss_sum
from distill.runs import append_jsonl, atomic_write_jsonl, read_jsonl


def lr_at(step: int, total: int, cfg: LocalTrainConfig) -> float:
    """Linear warmup, then cosine decay to lr x min_lr_ratio."""
    warmup = max(1, round(total * cfg.warmup_ratio))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


@dataclass
class Position:
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


def train(
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

    from distill import local_model

    on_step: Hook | None = opts.get("on_step")
    epochs, micro_tokens = cfg.epochs, cfg.micro_batch_tokens
    if epochs is None or micro_tokens is None:
        raise ValueError("unresolved config: build it with LocalTrainConfig.from_options")
    torch.manual_seed(cfg.seed)
    if cfg.device == "cpu" and torch.get_num_threads() < (os.cpu_count() or 1):
        torch.set_num_threads(os.cpu_count() or 1)

    # plan every epoch up front: deterministic, so a resumed run sees the same batches
    lengths = [len(e.ids) for e in train_data]
    plans = [plan_epoch(lengths, cfg.batch_tokens, cfg.seed, ep) for ep in range(epochs)]
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
    state = Position()
    ckpt_file = ckpt_dir / "state.pt"
    best_file = ckpt_dir / "best.pt"
    log_path = out / "log.jsonl"
    if ckpt_file.exists():
        saved = torch.load(ckpt_file, map_location="cpu", weights_only=False)
        if saved.get("key") == key:
            load_trainable_state(model, saved["trainable"])
            optimizer.load_state_dict(saved["optimizer"])
            state = Position(**saved["progress"])
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
            model, eval_data, micro_tokens, pad_id, cfg.device, cfg.precision
        )
        base = None if math.isnan(state.base_eval_loss) else round(state.base_eval_loss, 5)
        append_jsonl(log_path, [{"step": 0, "epoch": 0, "eval_loss": base}])

    def save_checkpoint() -> None:
        atomic_torch_save(
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
    bar = epoch_bar(console, "train")
    with bar:
        task = bar.add_task(
            f"epoch {state.epoch + 1}/{epochs}",
            total=total_steps,
            completed=state.step,
            status="",
        )
        while state.epoch < epochs and not state.stopped_early:
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
                for mb in micro_batches(step_examples, lengths, micro_tokens):
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
                    description=f"epoch {state.epoch + 1}/{epochs}",
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
            eval_loss = evaluate(model, eval_data, micro_tokens, pad_id, cfg.device, cfg.precision)
            epoch_train = state.epoch_loss_sum / max(state.epoch_tokens, 1)
            state.epoch += 1
            state.batch_in_epoch = 0
            state.epoch_loss_sum, state.epoch_tokens = 0.0, 0
            state.last_train_loss = epoch_train  # the summary reports the last epoch's mean
            if not eval_data or eval_loss < state.best_eval_loss:
                state.best_eval_loss = eval_loss if eval_data else float("inf")
                state.best_epoch = state.epoch
                state.bad_epochs = 0
                atomic_torch_save(trainable_state(model), best_file)
            else:
                state.bad_epochs += 1
                if state.bad_epochs >= cfg.patience and state.epoch < epochs:
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
                f"epoch {state.epoch}: train loss {epoch_train:.3f}, eval loss {fmt_loss(eval_loss)}"
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
    replace_dir(tmp, out / "adapter")
    merged = False
    if opts.get("merge"):
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".merged."))
        full = model.merge_and_unload()
        full.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        replace_dir(tmp, out / "merged")
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


def fmt_loss(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"


def epoch_bar(console: Any, label: str) -> Any:
    """The progress bar of a training loop: '<label> epoch i/n', steps done, a status, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(f"[bold]{label}[/] {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
