"""Checkpoints and atomic folders: a killed run resumes from the last checkpoint, and a
folder (adapter/, merged/) is swapped into place whole."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from distill.errors import RunError
from distill.runs import atomic_file


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


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


def replace_dir(tmp: Path, target: Path) -> None:
    """Swap a fully written folder into place; a kill leaves the old or the new one."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
