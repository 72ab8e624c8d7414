"""Check a chat JSONL file against OpenAI's fine-tuning format before paying for a fine-tune.

The file is streamed, so memory stays flat in its size; token counts are exact o200k counts
from `quicktok`, batched; statistics are kept as histograms and summarised with polars.
`distill train` and `distill review` reuse `validate_file` and `check_example`.

The parts are in distill.validation: the scanner (scan), the codes and report (problems),
the per-example rules (rules), the statistics (tally) and exact duplicate lines.
"""

from __future__ import annotations

from distill.validation.problems import CODES, MAX_LINE_BYTES, Problem, ValidationReport
from distill.validation.rules import check_example, is_valid_example
from distill.validation.scan import validate_file, validate_stream
from distill.validation.tally import default_epochs

__all__ = [
    "CODES",
    "MAX_LINE_BYTES",
    "Problem",
    "ValidationReport",
    "check_example",
    "default_epochs",
    "is_valid_example",
    "validate_file",
    "validate_stream",
]
