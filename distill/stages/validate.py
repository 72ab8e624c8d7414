"""Check a chat JSONL file against OpenAI's fine-tuning format before paying for a fine-tune.

The file is streamed in binary, one bounded line at a time, so memory stays flat in the file's
size (the only per-example state is 16 bytes for exact-duplicate detection). Token counts are
exact o200k counts from `quicktok`, batched; statistics are kept as histograms and summarised
with polars. `distill train` and `distill review` reuse `validate_file` and `check_example`.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from distill.style import StyleSpec

MAX_LINE_BYTES = 8 * 1024 * 1024  # a longer line is reported and skipped, never parsed
MIN_EXAMPLES = 10  # OpenAI refuses a training file with fewer
MAX_STORED_PER_CODE = 10_000  # problems kept per code; counts stay exact beyond that
TOKEN_BATCH = 4096  # examples per tokenizer call

TOP_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight"}
)
ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
BOM = b"\xef\xbb\xbf"
_TOP_TYPES: tuple[tuple[str, type, str], ...] = (
    ("tools", list, "an array"),
    ("functions", list, "an array"),
    ("parallel_tool_calls", bool, "a boolean"),
)
_MESSAGE_TYPES: tuple[tuple[str, type, str], ...] = (
    ("name", str, "a string"),
    ("tool_call_id", str, "a string"),
    ("tool_calls", list, "an array"),
    ("function_call", dict, "an object"),
)

# OpenAI's default epoch rule for fine-tuning jobs (from the cookbook's data-prep notebook).
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25
TOKENS_PER_MESSAGE = 3  # <|start|>role ... <|end|> overhead, as in the cookbook
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>

# Every code the validator can emit: (severity, what it means). The README lists these.
CODES: dict[str, tuple[str, str]] = {
    "invalid-json": ("error", "the line is not valid JSON"),
    "truncated-line": ("error", "the last line has no newline and is not valid JSON: cut off"),
    "invalid-utf8": ("error", "the line has bytes that are not UTF-8"),
    "invalid-unicode": ("error", "a string holds a lone surrogate escape such as \\ud800"),
    "line-too-long": ("error", f"the line is over {MAX_LINE_BYTES // (1024 * 1024)} MiB"),
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


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _keys(keys: Iterable[str]) -> str:
    return ", ".join(repr(k) for k in sorted(keys))


def _check(obj: Any) -> list[tuple[str, str]]:
    """(code, message) for every format rule `obj` breaks; empty when it is a valid example."""
    if not isinstance(obj, dict):
        hint = (
            " (the file looks like a JSON array; write one example per line)"
            if isinstance(obj, list)
            else ""
        )
        return [
            (
                "not-object",
                f"a JSON {_type_name(obj)}, not an object; each line must be one example "
                f'{{"messages": [...]}}{hint}',
            )
        ]
    out: list[tuple[str, str]] = []
    extra = obj.keys() - TOP_KEYS
    if extra:
        out.append(
            (
                "unknown-key",
                f"unknown top-level key {_keys(extra)}; OpenAI accepts only {_keys(TOP_KEYS)}",
            )
        )
    for key, want, name in _TOP_TYPES:
        if key in obj and not isinstance(obj[key], want):
            out.append(("bad-type", f"{key} must be {name}, got {_type_name(obj[key])}"))
    if "messages" not in obj:
        out.append(("missing-messages", 'no "messages" key; each line must be {"messages": [...]}'))
        return out
    messages = obj["messages"]
    if not isinstance(messages, list):
        out.append(("messages-not-list", f"messages must be an array, got {_type_name(messages)}"))
        return out
    if not messages:
        out.append(
            (
                "messages-empty",
                "messages is an empty array; add at least a user and an assistant message",
            )
        )
        return out
    has_assistant = False
    trained = False
    for i, m in enumerate(messages):
        if type(m) is dict and len(m) == 2:  # the common case: just role and content
            role = m.get("role")
            content = m.get("content")
            if type(role) is str and role in ROLES and type(content) is str and content:
                if role == "assistant":
                    has_assistant = trained = True
                continue
        at = f"messages[{i}]"
        if not isinstance(m, dict):
            out.append(
                (
                    "message-not-object",
                    f"{at} is a {_type_name(m)}, not an object with role and content",
                )
            )
            continue
        if not m.keys() <= MESSAGE_KEYS:
            out.append(
                (
                    "unknown-message-key",
                    f"{at} has unknown key {_keys(m.keys() - MESSAGE_KEYS)}; allowed: {_keys(MESSAGE_KEYS)}",
                )
            )
        role = m.get("role")
        if role is None:
            out.append(("missing-role", f"{at} has no role; use one of {_keys(ROLES)}"))
        elif not isinstance(role, str) or role not in ROLES:
            shown = repr(role) if isinstance(role, str) else _type_name(role)
            out.append(("unknown-role", f"{at} has role {shown[:60]}; use one of {_keys(ROLES)}"))
        is_assistant = role == "assistant"
        calls = m.get("tool_calls") or m.get("function_call")
        if "content" not in m:
            if not (is_assistant and calls):
                out.append(("missing-content", f"{at} has no content"))
        else:
            content = m["content"]
            if content is None:
                if not (is_assistant and calls):
                    out.append(
                        (
                            "null-content",
                            f"{at} content is null; only an assistant message with tool_calls or "
                            "function_call may have null content",
                        )
                    )
            elif not isinstance(content, str):
                out.append(
                    ("content-type", f"{at} content must be a string, got {_type_name(content)}")
                )
            elif not content:
                out.append(("empty-content", f"{at} ({role}) content is empty"))
        for key, want, name in _MESSAGE_TYPES:
            if key in m and not isinstance(m[key], want):
                out.append(("bad-type", f"{at} {key} must be {name}, got {_type_name(m[key])}"))
        if "weight" in m:
            w = m["weight"]
            if not is_assistant:
                out.append(
                    ("weight-not-assistant", f"{at} has a weight but only assistant messages may")
                )
            elif isinstance(w, bool) or w not in (0, 1):
                out.append(("bad-weight", f"{at} weight must be 0 or 1, got {json.dumps(w)[:40]}"))
            elif w == 1:
                trained = True
        elif is_assistant:
            trained = True
        has_assistant = has_assistant or is_assistant
    if not has_assistant:
        out.append(
            ("no-assistant", "no assistant message; each example needs at least one reply to learn")
        )
    elif not trained and not any(c for c, _ in out if CODES[c][0] == "error"):
        out.append(
            (
                "nothing-to-learn",
                "every assistant message has weight 0; the example teaches nothing",
            )
        )
    return out


def check_example(obj: Any) -> list[Problem]:
    """Every format problem (errors and warnings) in one parsed example, without line numbers."""
    problems = [Problem(code, msg) for code, msg in _check(obj)]
    if isinstance(obj, dict) and _has_surrogate(obj):
        problems.append(Problem("invalid-unicode", _SURROGATE_MSG))
    return problems


def is_valid_example(obj: Any) -> bool:
    return not any(p.severity == "error" for p in check_example(obj))


_SURROGATE_MSG = "a string holds a lone surrogate escape (like \\ud800) that is not valid Unicode"


def _has_surrogate(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (TypeError, ValueError, RecursionError):
        return False
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def default_epochs(n_examples: int) -> int:
    """OpenAI's default: 3 epochs, raised or lowered so epochs x examples is in 100..25,000."""
    if n_examples <= 0:
        return 0
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n_examples))
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


class _Collector:
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


class _SystemPrompts:
    """Which system prompt each example uses, to flag missing and inconsistent ones at the end.
    Bounded: at most MAX_DISTINCT prompts and MAX_LINES line numbers are kept; counts are exact."""

    MAX_DISTINCT = 1000
    MAX_LINES = 100_000

    def __init__(self) -> None:
        self.prompts: dict[str, list[Any]] = {}  # prompt -> [count, first line, array of lines]
        self.missing = array("q")
        self.missing_count = 0
        self.with_prompt = 0
        self.untracked = 0  # examples whose prompt came after MAX_DISTINCT others
        self.stored = 0

    def add(self, line: int, messages: list[dict[str, Any]]) -> None:
        first = messages[0]
        if first["role"] != "system" or not isinstance(first.get("content"), str):
            self.missing_count += 1
            if len(self.missing) < MAX_STORED_PER_CODE:
                self.missing.append(line)
            return
        self.with_prompt += 1
        prompt = first["content"]
        entry = self.prompts.get(prompt)
        if entry is None:
            if len(self.prompts) >= self.MAX_DISTINCT:
                self.untracked += 1
                return
            entry = self.prompts[prompt] = [0, line, array("q")]
        entry[0] += 1
        if self.stored < self.MAX_LINES:
            entry[2].append(line)
            self.stored += 1

    def report(self, collector: _Collector, total: int) -> None:
        if total == 0:
            return
        if self.with_prompt == 0:
            collector.add(
                None,
                "no-system-prompt",
                "no example has a system prompt; add the one you will use at inference time",
            )
            return
        if self.missing_count:
            for line in self.missing:
                collector.add(line, "no-system-prompt", "no system prompt, unlike other examples")
            collector.counts["no-system-prompt"] += self.missing_count - len(self.missing)
        if len(self.prompts) > 1 or self.untracked:
            common, (n, first, _) = max(self.prompts.items(), key=lambda kv: kv[1][0])
            differing = self.with_prompt - n
            added = 0
            for prompt, (_, _, lines) in self.prompts.items():
                if prompt == common:
                    continue
                shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
                message = (
                    f"system prompt {shown!r} differs from the most common one "
                    f"(line {first}, {n} of {self.with_prompt} examples)"
                )
                for line in lines:
                    collector.add(line, "system-prompt-differs", message)
                    added += 1
            collector.counts["system-prompt-differs"] += differing - added


class _Tally:
    """Statistics of the valid examples: exact o200k token counts (batched through quicktok on a
    background thread), roles, messages and replies per example, system prompts. All kept as
    counters and histograms, so memory does not grow with the file."""

    def __init__(self, limit: int, collector: _Collector, systems: _SystemPrompts) -> None:
        import quicktok

        self.quicktok = quicktok
        self.enc = quicktok.get_encoding("o200k_base")
        self.limit = limit
        self.collector = collector
        self.systems = systems
        # per-message overhead plus the role's own tokens
        self.role_tokens = {r: TOKENS_PER_MESSAGE + self.enc.count(r) for r in sorted(ROLES)}
        self.roles: dict[str, int] = dict.fromkeys(self.role_tokens, 0)
        self.msg_hist: dict[int, int] = {}
        self.reply_hist: dict[int, int] = {}
        self.cached: dict[str, int] = {}  # repeated system prompts, counted once
        self.texts: list[str] = []
        self.ends: list[int] = []  # len(texts) after each pending example
        self.fixed: list[int] = []  # per pending example: overhead + cached counts
        self.lines: list[int] = []
        self.token_hist: dict[int, int] = {}
        self.billed = 0
        self.over = 0
        self._pool: Any = None
        self._pending: Any = None

    def add_simple(self, line: int, obj: Any) -> bool:
        """Tally `obj` if it is a valid example of the common shape ({"messages": [...]} with
        only role and content per message); False, with nothing tallied, for anything else."""
        if type(obj) is not dict or len(obj) != 1:
            return False
        msgs = obj.get("messages")
        if type(msgs) is not list or not msgs:
            return False
        texts = self.texts
        start = len(texts)
        append = texts.append
        role_tokens = self.role_tokens
        roles = self.roles
        fixed = REPLY_PRIMING
        replies = 0
        done = 0
        for m in msgs:
            if type(m) is not dict or len(m) != 2:
                break
            role = m.get("role")
            content = m.get("content")
            if type(role) is not str or type(content) is not str or not content:
                break
            rt = role_tokens.get(role)
            if rt is None:
                break
            fixed += rt
            roles[role] += 1
            done += 1
            if role == "system":
                n = self.cached.get(content)
                if n is None:
                    n = self._count_one(content)
                    if len(self.cached) < 1024:
                        self.cached[content] = n
                fixed += n
            else:
                if role == "assistant":
                    replies += 1
                append(content)
        if done != len(msgs) or not replies:
            del texts[start:]
            for m in msgs[:done]:
                roles[m["role"]] -= 1
            return False
        self._commit(line, msgs, fixed, replies)
        return True

    def add(self, line: int, obj: dict[str, Any]) -> None:
        """Tally an example that passed `_check` (any shape OpenAI accepts)."""
        texts = self.texts
        fixed = REPLY_PRIMING
        replies = 0
        msgs = obj["messages"]
        for m in msgs:
            role = m["role"]
            fixed += self.role_tokens[role]
            self.roles[role] += 1
            replies += role == "assistant"
            c = m.get("content")
            if c:
                if role == "system":
                    fixed += self._count_one(c)
                else:
                    texts.append(c)
            name = m.get("name")
            if name:
                texts.append(name)
                fixed += TOKENS_PER_NAME
            for key in ("tool_calls", "function_call"):
                if m.get(key):
                    texts.append(json.dumps(m[key], ensure_ascii=False))
        for key in ("tools", "functions"):
            if obj.get(key):
                texts.append(json.dumps(obj[key], ensure_ascii=False))
        self._commit(line, msgs, fixed, replies)

    def _commit(self, line: int, msgs: list[Any], fixed: int, replies: int) -> None:
        self.ends.append(len(self.texts))
        self.fixed.append(fixed)
        self.lines.append(line)
        n = len(msgs)
        self.msg_hist[n] = self.msg_hist.get(n, 0) + 1
        self.reply_hist[replies] = self.reply_hist.get(replies, 0) + 1
        self.systems.add(line, msgs)
        if len(self.lines) >= TOKEN_BATCH:
            self.flush()

    def _count_one(self, text: str) -> int:
        try:
            return int(self.enc.count(text))
        except Exception:  # a string the tokenizer cannot take; never reached for checked lines
            return int(self.enc.count(text.encode("utf-8", "replace").decode("utf-8")))

    def _count_batch(self, texts: list[str]) -> Any:
        import numpy as np

        try:
            return np.asarray(self.quicktok.count_batch(self.enc, texts), dtype=np.int64)
        except Exception:
            return np.array([self._count_one(t) for t in texts], dtype=np.int64)

    def flush(self, final: bool = False) -> None:
        """Send the pending batch to the tokenizer thread; fold in the batch sent before it."""
        if self._pending is not None:
            self._fold(*self._pending)
            self._pending = None
        if self.lines:
            batch = (self.texts, self.ends, self.fixed, self.lines)
            self.texts, self.ends, self.fixed, self.lines = [], [], [], []
            if final:
                self._fold(self._count_batch(batch[0]), *batch[1:])
            else:
                if self._pool is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="distill-tokens")
                self._pending = (self._pool.submit(self._count_batch, batch[0]), *batch[1:])
        if final and self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _fold(self, counts: Any, ends_: list[int], fixed: list[int], lines: list[int]) -> None:
        import numpy as np

        if not isinstance(counts, np.ndarray):
            counts = counts.result()
        cum = np.concatenate(([0], np.cumsum(counts)))
        ends = np.asarray(ends_, dtype=np.int64)
        starts = np.concatenate(([0], ends[:-1]))
        per_example = cum[ends] - cum[starts] + np.asarray(fixed, dtype=np.int64)
        values, freq = np.unique(per_example, return_counts=True)
        hist = self.token_hist
        for v, f in zip(values.tolist(), freq.tolist(), strict=True):
            hist[v] = hist.get(v, 0) + f
        self.billed += int(np.minimum(per_example, self.limit).sum())
        for idx in np.nonzero(per_example > self.limit)[0].tolist():
            self.over += 1
            self.collector.add(
                lines[idx],
                "too-many-tokens",
                f"{int(per_example[idx]):,} tokens; the model trains on at most {self.limit:,} "
                "per example, the rest is cut off",
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


DEDUPE_CHUNK = 1 << 20  # (hash, line) pairs held in memory before they spill to bucket files
DEDUPE_BUCKETS = 64


class _Duplicates:
    """Exact-duplicate detection in bounded memory: a 64-bit hash and the line number of every
    valid example; past DEDUPE_CHUNK pairs they are hash-partitioned into temporary bucket files,
    and each bucket is checked on its own at the end."""

    def __init__(self) -> None:
        self.hashes = array("q")
        self.lines = array("q")
        self.tmp: Any = None

    def spill(self) -> None:
        import tempfile

        import numpy as np

        if self.tmp is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="distill-validate-")
        pairs = np.empty(len(self.hashes), dtype=[("h", "<i8"), ("l", "<i8")])
        pairs["h"] = np.frombuffer(self.hashes, dtype=np.int64)
        pairs["l"] = np.frombuffer(self.lines, dtype=np.int64)
        bucket = pairs["h"] & (DEDUPE_BUCKETS - 1)
        order = np.argsort(bucket, kind="stable")  # stable: each bucket stays in line order
        pairs, bucket = pairs[order], bucket[order]
        bounds = np.searchsorted(bucket, np.arange(DEDUPE_BUCKETS + 1))
        for b in range(DEDUPE_BUCKETS):
            if bounds[b + 1] > bounds[b]:
                with open(Path(self.tmp.name) / f"{b}.bin", "ab") as f:
                    pairs[bounds[b] : bounds[b + 1]].tofile(f)
        self.hashes = array("q")
        self.lines = array("q")

    def report(self, collector: _Collector) -> int:
        """Flag every line whose content was seen on an earlier line; returns how many."""
        import numpy as np

        total = 0
        kept_dup: list[Any] = []
        kept_orig: list[Any] = []
        for h, ln in self._buckets():
            dup, orig = _duplicate_pairs(h, ln)
            total += len(dup)
            keep = np.argsort(dup, kind="stable")[: collector.cap]  # only the lowest are shown
            kept_dup.append(dup[keep])
            kept_orig.append(orig[keep])
        if not total:
            return 0
        dup, orig = np.concatenate(kept_dup), np.concatenate(kept_orig)
        by_line = np.argsort(dup, kind="stable")[: collector.cap]
        for d, o in zip(dup[by_line].tolist(), orig[by_line].tolist(), strict=True):
            collector.add(d, "duplicate", f"exact duplicate of line {o}")
        collector.counts["duplicate"] += total - len(by_line)
        return total

    def _buckets(self) -> Iterable[tuple[Any, Any]]:
        import numpy as np

        if self.tmp is None:
            yield (
                np.frombuffer(self.hashes, dtype=np.int64),
                np.frombuffer(self.lines, dtype=np.int64),
            )
            return
        self.spill()
        for b in range(DEDUPE_BUCKETS):
            path = Path(self.tmp.name) / f"{b}.bin"
            if path.exists():
                pairs = np.fromfile(path, dtype=[("h", "<i8"), ("l", "<i8")])
                yield pairs["h"].copy(), pairs["l"].copy()
                del pairs

    def close(self) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None


def _duplicate_pairs(h: Any, ln: Any) -> tuple[Any, Any]:
    """(duplicate lines, line each duplicates) for hashes `h` of lines `ln` (in line order)."""
    import numpy as np

    if len(h) < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    order = np.argsort(h, kind="stable")  # stable: equal hashes stay in line order
    hs = h[order]
    run_start = np.empty(len(hs), dtype=bool)
    run_start[0] = True
    np.not_equal(hs[1:], hs[:-1], out=run_start[1:])
    del hs
    dup_pos = np.nonzero(~run_start)[0]
    if not len(dup_pos):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    # for each position, the index (in sorted order) of the first element of its run
    first_idx = np.maximum.accumulate(np.where(run_start, np.arange(len(run_start)), 0))
    return ln[order[dup_pos]], ln[order[first_idx[dup_pos]]]


def _summarise(hist: dict[int, int]) -> dict[str, Any]:
    """min, mean, p95 (nearest rank), max and total of a value -> count histogram, with polars."""
    import polars as pl

    if not hist:
        return {"min": None, "mean": None, "p95": None, "max": None, "total": 0}
    df = pl.DataFrame(
        {"value": list(hist.keys()), "n": list(hist.values())},
        schema={"value": pl.Int64, "n": pl.Int64},
    ).sort("value")
    n = int(df["n"].sum())
    rank = math.ceil(0.95 * n)
    row = (
        df.with_columns(pl.col("n").cum_sum().alias("cum"))
        .filter(pl.col("cum") >= rank)
        .row(0, named=True)
    )
    agg = df.select(
        pl.col("value").min().alias("min"),
        pl.col("value").max().alias("max"),
        (pl.col("value") * pl.col("n")).sum().alias("total"),
    ).row(0, named=True)
    return {
        "min": int(agg["min"]),
        "mean": round(agg["total"] / n, 2),
        "p95": int(row["value"]),
        "max": int(agg["max"]),
        "total": int(agg["total"]),
    }


def _model_facts(model: str) -> tuple[str, int, float | None]:
    """(resolved name, per-example token limit, training USD per 1M tokens or None)."""
    from distill.models import (
        fine_tune_context,
        fine_tune_facts,
        parse_model,
        resolve_fine_tune_model,
    )

    ref = parse_model(model)
    if ref.provider != "openai":
        return str(ref), fine_tune_context(ref.name), None
    facts = fine_tune_facts(ref.name)
    price = float(facts["train_per_1m"]) if facts and "train_per_1m" in facts else None
    return resolve_fine_tune_model(ref.name), fine_tune_context(ref.name), price


def validate_file(
    path: str | Path,
    style: StyleSpec | None = None,
    model: str = "gpt-4o-mini",
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_per_code: int = MAX_STORED_PER_CODE,
) -> ValidationReport:
    """Stream a chat JSONL file and report every format problem, warnings and statistics.

    Raises InputError only when the file cannot be opened; problems inside it are in the report.
    """
    from distill.errors import InputError

    p = Path(path)
    try:
        f = open(p, "rb", buffering=1024 * 1024)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InputError(f"{p}: no such file; pass the path of a chat JSONL file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory; pass the path of a chat JSONL file") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e.strerror}") from None
    with f:
        return validate_stream(
            f,
            str(path),
            style=style,
            model=model,
            max_line_bytes=max_line_bytes,
            max_per_code=max_per_code,
        )


def validate_stream(
    f: IO[bytes],
    name: str = "<stream>",
    style: StyleSpec | None = None,
    model: str = "gpt-4o-mini",
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_per_code: int = MAX_STORED_PER_CODE,
) -> ValidationReport:
    """The same as validate_file on an open binary stream (a file, BytesIO, a pipe)."""
    resolved, limit, price = _model_facts(model)
    col = _Collector(max_per_code)
    systems = _SystemPrompts()
    tally = _Tally(limit, col, systems)
    dups = _Duplicates()
    try:
        lines, n_examples, invalid, blank = _scan(f, col, tally, dups, style, max_line_bytes)
        tally.flush(final=True)
        n_dups = dups.report(col)
    finally:
        tally.close()
        dups.close()
    del dups
    systems.report(col, n_examples)
    if n_examples < MIN_EXAMPLES:
        col.add(
            None,
            "too-few-examples",
            f"{n_examples} valid example(s); OpenAI needs at least {MIN_EXAMPLES} "
            "(50 to 100 is a good start)",
        )
    epochs = default_epochs(n_examples)
    billed = tally.billed * epochs
    stats: dict[str, Any] = {
        "lines": lines,
        "examples": n_examples,
        "invalid_lines": invalid,
        "blank_lines": blank,
        "duplicates": n_dups,
        "roles": tally.roles,
        "messages_per_example": _summarise(tally.msg_hist),
        "replies_per_example": _summarise(tally.reply_hist),
        "tokens_per_example": _summarise(tally.token_hist),
        "over_token_limit": tally.over,
        "model": resolved,
        "token_limit": limit,
        "epochs": epochs,
        "billed_tokens_per_epoch": tally.billed,
        "billed_tokens": billed,
        "train_usd_per_1m": price,
        "estimated_cost_usd": round(billed * price / 1_000_000, 4) if price is not None else None,
    }
    col.errors.sort(key=_order)
    col.warnings.sort(key=_order)
    return ValidationReport(
        path=name,
        model=resolved,
        errors=col.errors,
        warnings=col.warnings,
        counts=col.counts,
        stats=stats,
    )


def _scan(
    f: IO[bytes],
    col: _Collector,
    tally: _Tally,
    dups: _Duplicates,
    style: StyleSpec | None,
    max_line_bytes: int,
) -> tuple[int, int, int, int]:
    """The per-line loop: (lines, valid examples, invalid lines, blank lines)."""
    add = col.add
    push_hash = dups.hashes.append
    push_line = dups.lines.append
    fast_parse = _fast_parser()
    add_simple = tally.add_simple
    readline = f.readline
    lineno = n_examples = invalid = blank = crlf = first_crlf = 0

    while True:
        raw = readline(max_line_bytes)
        if not raw:
            break
        lineno += 1
        if raw[-1:] != b"\n" and len(raw) >= max_line_bytes:
            size = len(raw)
            while True:  # skip to the end of this line without holding it
                chunk = readline(max_line_bytes)
                size += len(chunk)
                if not chunk or chunk[-1:] == b"\n":
                    break
            add(
                lineno,
                "line-too-long",
                f"{size:,} bytes, over the {max_line_bytes:,}-byte limit; skipped "
                "(no example this long fits a training context)",
            )
            invalid += 1
            continue
        if lineno == 1 and raw.startswith(BOM):
            add(
                1,
                "bom",
                "the file starts with a UTF-8 byte-order mark (BOM); save it as UTF-8 without BOM",
            )
            raw = raw[3:]
        if raw[-2:] == b"\r\n":
            crlf += 1
            if crlf == 1:
                first_crlf = lineno
        body = raw.strip(b" \t\r\n")
        if not body:
            blank += 1
            add(lineno, "blank-line", "empty line; remove it")
            continue

        obj: Any = fast_parse(body) if fast_parse is not None else _FAILED
        if obj is _FAILED:
            obj = _parse(body, lineno, raw, add)
            if obj is _FAILED:
                invalid += 1
                continue
        if (b"\\ud" in body or b"\\uD" in body) and _has_surrogate(obj):
            add(lineno, "invalid-unicode", _SURROGATE_MSG)
            invalid += 1
            continue
        if not add_simple(lineno, obj):
            found = _check(obj)
            fatal = False
            for code, msg in found:
                add(lineno, code, msg)
                fatal = fatal or CODES[code][0] == "error"
            if fatal:
                invalid += 1
                continue
            tally.add(lineno, obj)
        n_examples += 1
        push_hash(hash(body))
        push_line(lineno)
        if n_examples % DEDUPE_CHUNK == 0:
            dups.spill()
            push_hash = dups.hashes.append
            push_line = dups.lines.append
        if style is not None:
            messages = obj["messages"]
            if messages[0]["role"] != "system":
                add(
                    lineno,
                    "style",
                    "no system prompt; the style spec's is " + repr(style.system_prompt),
                )
            for i, problem in style.check_messages(messages):
                add(lineno, "style", f"messages[{i}] ({messages[i]['role']}): {problem}")

    if crlf:
        add(
            first_crlf,
            "crlf",
            f"{crlf:,} line(s) end with CRLF (Windows line endings), first here; "
            "OpenAI accepts them but LF is safer",
        )
    return lineno, n_examples, invalid, blank


_FAILED = object()
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _fast_parser() -> Any:
    """jiter (Rust, shipped with the openai package) parses a line ~25% faster than the stdlib.
    Any line it refuses goes through `_parse`, so messages and edge cases are the stdlib's."""
    try:
        import jiter
    except ImportError:  # pragma: no cover - openai depends on jiter
        return None
    from_json = jiter.from_json

    def parse(body: bytes) -> Any:
        try:
            return from_json(body, allow_inf_nan=False)
        except ValueError:
            return _FAILED

    return parse


def _parse(body: bytes, lineno: int, raw: bytes, add: Any) -> Any:
    """Strict UTF-8 and stdlib JSON, each failure reported as one problem; _FAILED on failure."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = body[e.start : e.start + 1].hex()
        add(
            lineno,
            "invalid-utf8",
            f"byte {e.start + 1} (0x{bad}) is not UTF-8; re-save the file as UTF-8",
        )
        return _FAILED
    try:
        obj, end = _DECODER.raw_decode(text)
        if end != len(text):
            raise json.JSONDecodeError("Extra data after the JSON value", text, end)
        return obj
    except RecursionError:
        add(
            lineno,
            "too-deep",
            "JSON nested too deeply to parse; an example is a flat list of messages",
        )
    except ValueError as e:
        msg = getattr(e, "msg", str(e))
        col_no = getattr(e, "colno", None)
        where = f" at column {col_no}" if col_no is not None else ""
        if raw[-1:] != b"\n":  # no newline and under the length limit: the last line
            add(
                lineno,
                "truncated-line",
                f"last line has no newline and is not valid JSON ({msg}{where}); the file looks cut off",
            )
        elif lineno == 1 and text[:1] in "[{":
            add(
                lineno,
                "invalid-json",
                f"{msg}{where}; if the file is one pretty-printed JSON document, write one "
                "example per line (JSONL) instead",
            )
        else:
            add(lineno, "invalid-json", f"{msg}{where}")
    return _FAILED


def _order(p: Problem) -> int:
    return p.line if p.line is not None else 1 << 62
