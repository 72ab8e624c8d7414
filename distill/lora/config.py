"""Every knob of a local LoRA run, with its default and help written once: the dataclass field.
`distill train`'s local flags take their help from `local_help`, and `from_options` fills in
what a flag left unset, so the CLI, the manifest and the code cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from distill.errors import UsageError
from distill.knobs import knob, recorded

CHECKPOINT_SECONDS = 120.0


@dataclass
class LocalTrainConfig:
    """The recorded fields decide the result: with the data they tell a finished or resumable
    run from a new one. None means derived (the help says how), filled in by `from_options`."""

    base: str = knob(flag=False)
    epochs: int | None = knob(
        None, "epochs (default: OpenAI's rule, 3 scaled to 100..25,000 example-epochs)"
    )
    lr: float = knob(2e-4, "learning rate")  # AdamW, 10 % warmup, cosine decay to 10 %
    lora_r: int = knob(16, "LoRA rank")
    lora_alpha: int | None = knob(None, "LoRA alpha (default 2 x r)")
    lora_dropout: float = knob(0.05, "LoRA dropout")
    target_modules: str = knob("all-linear", flag=False)
    batch_tokens: int = knob(1024, "padded tokens per optimiser step (~8 short chats)")
    # padded tokens per forward pass (bounds activation memory): the smaller of batch_tokens, 512
    micro_batch_tokens: int | None = knob(None, flag=False)
    precision: str = knob("auto", "auto = bf16 autocast on a GPU with bfloat16, fp32 on CPU")
    max_seq_len: int = knob(1024, "truncate longer examples")
    patience: int = knob(1, "epochs of rising eval loss before stopping")
    seed: int = knob(0, "shuffling seed")
    warmup_ratio: float = knob(0.1, flag=False)
    min_lr_ratio: float = knob(0.1, flag=False)  # cosine decays to lr x this
    weight_decay: float = knob(0.0, flag=False)
    grad_clip: float = knob(1.0, flag=False)
    # not recorded (not in the run's key): where and how often, never what
    checkpoint_seconds: float = knob(CHECKPOINT_SECONDS, flag=False, record=False)
    checkpoint_every: int | None = knob(
        None,
        "also checkpoint every N steps (default: each epoch and every "
        f"{CHECKPOINT_SECONDS / 60:g} minutes)",
        record=False,
    )
    device: str = knob("auto", "auto, cpu or cuda", record=False)

    @classmethod
    def from_options(cls, base: str, opts: dict[str, Any], n_examples: int) -> LocalTrainConfig:
        """The config for `distill train`'s flags (None: the field's default), with the
        derived defaults filled in. Device and precision stay as given ("auto")."""
        from distill.validation.tally import default_epochs

        known = {f.name for f in fields(cls)} - {"base"}
        cfg = cls(base=base, **{k: v for k, v in opts.items() if k in known and v is not None})
        if cfg.epochs is None:
            cfg.epochs = default_epochs(n_examples)
        if cfg.lora_alpha is None:
            cfg.lora_alpha = 2 * cfg.lora_r
        if cfg.micro_batch_tokens is None:
            cfg.micro_batch_tokens = min(cfg.batch_tokens, 512)
        cfg.check()
        return cfg

    def check(self) -> None:
        for label, value, low in (
            ("--epochs", self.epochs, 1),
            ("--lora-r", self.lora_r, 1),
            ("--lora-alpha", self.lora_alpha, 1),
            ("--batch-tokens", self.batch_tokens, 16),
            ("--max-seq-len", self.max_seq_len, 8),
            ("--patience", self.patience, 1),
        ):
            if value is not None and value < low:
                raise UsageError(f"{label} {value}: must be at least {low}")
        if not 0 < self.lr < 1:
            raise UsageError(f"--lr {self.lr}: use a small positive rate such as 2e-4")
        if not 0 <= self.lora_dropout < 1:
            raise UsageError(f"--lora-dropout {self.lora_dropout}: must be in [0, 1)")

    def hyperparameters(self) -> dict[str, Any]:
        """What decides the result, as the run's config.json and key record it."""
        return recorded(self)


def local_help(name: str) -> str:
    """The help of `distill train --<name>` for local training, from the field, default
    included: local_help("lora_r") == "Local: LoRA rank (default 16)."."""
    f = next(f for f in fields(LocalTrainConfig) if f.name == name and f.metadata.get("flag"))
    help = f.metadata["help"]
    return (
        f"Local: {help}." if f.default is None else f"Local: {help} (default {_shown(f.default)})."
    )


def _shown(value: Any) -> str:
    """2e-4 rather than 0.0002: how people write a learning rate."""
    if isinstance(value, float) and value and abs(value) < 1e-3:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return f"{value:g}" if isinstance(value, float) else str(value)
