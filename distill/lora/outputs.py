"""What a local run leaves in train/local-<model>/ besides the adapter: config.json's result
(how a rerun knows it is done), the loss curve, a merged model, and the line that says how to
serve it (`distill export --format gguf`)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from distill.errors import require
from distill.lora.checkpoint import replace_dir
from distill.runs import Run, read_jsonl


def student_slug(name: str) -> str:
    """`smollm2-135m` -> local-smollm2-135m; a path -> local-<its folder name>."""
    base = Path(name).expanduser().name if ("/" in name or os.sep in name) else name
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "model"
    return f"local-{base.lower()}"


def finished(out: Path, key: str) -> dict[str, Any] | None:
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


def merge_saved(out: Path, base_dir: Path) -> Path:
    """merged/ from a finished run's adapter (for --merge after the training)."""
    peft = require("peft", "local", "merging a LoRA adapter")
    from distill import local_model

    model, tok = local_model.load(str(base_dir))
    merged = peft.PeftModel.from_pretrained(model, str(out / "adapter")).merge_and_unload()
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".merged."))
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    replace_dir(tmp, out / "merged")
    return (out / "merged").resolve()


def drop_modelfile(out: Path) -> None:
    """Earlier versions wrote out/Modelfile as `FROM <HF folder>` + `ADAPTER ./adapter`, which
    Ollama does not load (its import finds no weights in a PEFT folder). `distill export
    --format gguf` writes one beside a GGUF that does, so a stale one here is removed."""
    (out / "Modelfile").unlink(missing_ok=True)


def ollama_name(run: Run, name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", f"{run.name}-{student_slug(name)[6:]}".lower())


def print_ollama(console: Any, run: Run, name: str, out: Path) -> None:
    console.print(
        f"to serve it with Ollama or llama.cpp: distill export --format gguf --run {run.path} "
        f"(one GGUF and a Modelfile for `ollama create {ollama_name(run, name)} -f ...`)",
        soft_wrap=True,
    )


def plot_losses(out: Path) -> None:
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
