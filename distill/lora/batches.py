"""Batches: examples of similar length grouped under a token budget, so CPU time is not
spent on padding; each optimiser step split into forward passes that bound memory."""

from __future__ import annotations

import random
from typing import Any

from distill.lora.data import IGNORE, Encoded


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
        steps += _longest_first(order[start : start + chunk], lengths, batch_tokens)
    rng.shuffle(steps)
    return steps


def micro_batches(step: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """Split one step into forward passes of at most `budget` padded tokens."""
    return _longest_first(step, lengths, budget)


def _longest_first(indices: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """The indices, longest first, cut into runs whose padded size (count x longest) fits
    `budget` (an example longer than the budget goes alone)."""
    out: list[list[int]] = []
    cur: list[int] = []
    for i in sorted(indices, key=lambda j: -lengths[j]):
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
