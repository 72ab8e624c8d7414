"""What `distill validate` can find: every problem code with its severity and meaning, one
finding (Problem), the report of a file, and the collector that keeps them (capped per code,
counts exact)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_LINE_BYTES = 8 * 1024 * 1024  # a longer line is a warning, skipped, never held whole
MIN_EXAMPLES = 10  # OpenAI refuses a training file with fewer
MAX_STORED_PER_CODE = 10_000  # problems kept per code; counts stay exact beyond that

# Every code the validator can emit: (severity, what it means). The README lists these.
CODES: dict[str, tuple[str, str]] = {
    "invalid-json": ("error", "the line is not valid JSON"),
    "truncated-line": ("error", "the last line has no newline and is not valid JSON: cut off"),
    "invalid-utf8": ("error", "the line has bytes that are not UTF-8"),
    "invalid-unicode": ("error", "a string holds a lone surrogate escape such as \\ud800"),
    "too-deep": ("error", "the JSON is nested too deeply to parse"),
    "bom": ("error", "the file starts with a UTF-8 byte-order mark"),
    "not-object": ("error", "the line is JSON but not an object"),
    "unknown-key": ("error", "a top-level key OpenAI does not accept"),
    "missing-messages": ("error", "no `messages` key"),
    "messages-not-list": ("error", "`messages` is not a list"),
    "messages-empty": ("error", "`messages` is an empty list"),
    "message-not-object": ("error", "a message is not an object"),
    "unknown-message-key": ("error", "a message key OpenAI does not accept"),
    "missing-role": ("error", "a message has no `role`"),
    "unknown-role": ("error", "a role other than system, user, assistant, tool, function"),
    "missing-content": ("error", "a message has no `content`"),
    "null-content": ("error", "`content` is null outside an assistant tool/function call"),
    "content-type": ("error", "`content` is not a string"),
    "bad-type": ("error", "name, tool_calls, tools, ... has the wrong JSON type"),
    "weight-not-assistant": ("error", "`weight` on a message that is not the assistant's"),
    "bad-weight": ("error", "`weight` is not 0 or 1"),
    "no-assistant": ("error", "the example has no assistant message"),
    "too-few-examples": ("error", f"fewer than {MIN_EXAMPLES} valid examples"),
    "crlf": ("warning", "lines end with CRLF"),
    "line-too-long": (
        "warning",
        f"the line is over {MAX_LINE_BYTES // (1024 * 1024)} MiB: skipped, not in the statistics",
    ),
    "blank-line": ("warning", "an empty line"),
    "empty-content": ("warning", "a message with empty content"),
    "nothing-to-learn": ("warning", "every assistant message has weight 0"),
    "too-many-tokens": ("warning", "the example is over the model's training context"),
    "duplicate": ("warning", "an exact duplicate of an earlier line"),
    "no-system-prompt": ("warning", "no system prompt where other examples have one"),
    "system-prompt-differs": ("warning", "a system prompt unlike the most common one"),
    "style": ("warning", "a reply breaks the --style spec"),
}


@dataclass(slots=True)
class Problem:
    """One finding. `line` is 1-based; None for a problem with the file as a whole."""

    code: str
    message: str
    line: int | None = None

    @property
    def severity(self) -> str:
        return CODES.get(self.code, ("error", ""))[0]

    def format(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line is not None else file
        return f"{where}: {self.code}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "message": self.message}


@dataclass
class ValidationReport:
    """What `validate_file` found: problems (capped per code, counts exact) and statistics."""

    path: str
    model: str
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when OpenAI would accept the file (warnings allowed)."""
        return self.error_count == 0

    @property
    def error_count(self) -> int:
        return sum(n for c, n in self.counts.items() if CODES.get(c, ("error",))[0] == "error")

    @property
    def warning_count(self) -> int:
        return sum(n for c, n in self.counts.items() if CODES.get(c, ("error",))[0] == "warning")

    def omitted(self) -> dict[str, int]:
        """Per code, how many problems were counted but not kept (beyond the per-code cap)."""
        kept: dict[str, int] = {}
        for p in self.errors + self.warnings:
            kept[p.code] = kept.get(p.code, 0) + 1
        return {c: n - kept.get(c, 0) for c, n in self.counts.items() if n > kept.get(c, 0)}

    def lines(self) -> Iterable[str]:
        for p in self.errors + self.warnings:
            yield p.format(self.path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "valid": self.ok,
            "model": self.model,
            "error_count": self.error_count,
            "warning_count": self.warning_count,
            "counts": dict(sorted(self.counts.items())),
            "omitted": self.omitted(),
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
            "stats": self.stats,
        }


class Collector:
    """Problems kept per code up to a cap; counts always exact."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.counts: dict[str, int] = {}
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def add(self, line: int | None, code: str, message: str) -> None:
        n = self.counts.get(code, 0) + 1
        self.counts[code] = n
        if n <= self.cap:
            p = Problem(code, message, line)
            (self.errors if CODES[code][0] == "error" else self.warnings).append(p)
