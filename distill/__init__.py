"""distill: turn a few seed conversations into a fine-tuning dataset and a small model."""

__version__ = "0.1.0"
