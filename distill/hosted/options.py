"""The hosted flags of `distill train`, checked against what OpenAI accepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.errors import UsageError


@dataclass(frozen=True)
class HostedOptions:
    """The hosted flags of `distill train`; None means the server's "auto" / default."""

    epochs: int | None = None
    batch_size: int | None = None
    lr_multiplier: float | None = None
    suffix: str | None = None
    seed: int | None = None
    base_url: str | None = None
    yes: bool = False
    wait: bool = True
    attach: bool = False
    cancel: bool = False
    method: str = "supervised"  # or "dpo": preference pairs (pairs.jsonl)
    beta: float | None = None  # DPO only

    @classmethod
    def from_opts(cls, opts: dict[str, Any]) -> HostedOptions:
        """Take the hosted flags from the click kwargs; the local-only ones are ignored."""
        known = {f for f in cls.__dataclass_fields__}
        picked = {k: v for k, v in opts.items() if k in known and v is not None}
        o = cls(**picked)
        o.check()
        return o

    def check(self) -> None:
        if self.epochs is not None and not 1 <= self.epochs <= 50:
            raise UsageError(f"--epochs {self.epochs}: OpenAI accepts 1 to 50 (or leave it out)")
        if self.batch_size is not None and not 1 <= self.batch_size <= 256:
            raise UsageError(
                f"--batch-size {self.batch_size}: OpenAI accepts 1 to 256 (or leave it out)"
            )
        if self.lr_multiplier is not None and not self.lr_multiplier > 0:
            raise UsageError(f"--lr-multiplier {self.lr_multiplier}: must be greater than 0")
        if self.seed is not None and not 0 <= self.seed <= 2_147_483_647:
            raise UsageError(f"--seed {self.seed}: must be between 0 and 2147483647")
        if self.beta is not None and not 0 < self.beta <= 2:
            raise UsageError(f"--beta {self.beta}: OpenAI accepts (0, 2] (or leave it out)")
        if self.attach and self.cancel:
            raise UsageError("--attach and --cancel together: pick one")

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "n_epochs": self.epochs if self.epochs is not None else "auto",
            "batch_size": self.batch_size if self.batch_size is not None else "auto",
            "learning_rate_multiplier": (
                self.lr_multiplier if self.lr_multiplier is not None else "auto"
            ),
        }

    def method_body(self) -> dict[str, Any]:
        """The job's `method`: supervised, or DPO with its beta."""
        hp = self.hyperparameters()
        if self.method == "dpo":
            hp["beta"] = self.beta if self.beta is not None else "auto"
            return {"type": "dpo", "dpo": {"hyperparameters": hp}}
        return {"type": "supervised", "supervised": {"hyperparameters": hp}}
