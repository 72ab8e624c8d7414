"""The streaming scanner of `distill validate`: the file is read in binary, one bounded line at
a time, so memory stays flat in the file's size (the only per-example state is 16 bytes for
exact-duplicate detection). Each line is parsed (jiter, then the stdlib for the exact
message), checked against the rules, and tallied; a line over the size limit is skipped
without ever being held whole."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from distill.progress import Meter, progress
from distill.style import StyleSpec
from distill.validation.duplicate_lines import DEDUPE_CHUNK, Duplicates
from distill.validation.problems import (
    CODES,
    MAX_LINE_BYTES,
    MAX_STORED_PER_CODE,
    MIN_EXAMPLES,
    Collector,
    Problem,
    ValidationReport,
)
from distill.validation.rules import (
    SURROGATE_MSG,
    check,
    has_surrogate,
)
from distill.validation.tally import SystemPrompts, Tally, default_epochs, model_facts, summarise

BOM = b"\xef\xbb\xbf"


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
    resolved, limit, price = model_facts(model)
    col = Collector(max_per_code)
    systems = SystemPrompts()
    tally = Tally(limit, col, systems)
    dups = Duplicates()
    try:
        size = _size(f)
        with progress("validate", size, unit="bytes") as meter:
            scan = _scan(f, col, tally, dups, style, max_line_bytes, meter)
        tally.flush(final=True)
        n_dups = dups.report(col)
    finally:
        tally.close()
        dups.close()
    del dups
    n_examples = scan.examples
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
        "lines": scan.lines,
        "examples": n_examples,
        "invalid_lines": scan.invalid,
        "blank_lines": scan.blank,
        "too_long_lines": scan.too_long,
        "duplicates": n_dups,
        "roles": tally.roles,
        "messages_per_example": summarise(tally.msg_hist),
        "replies_per_example": summarise(tally.reply_hist),
        "tokens_per_example": summarise(tally.token_hist),
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


@dataclass
class _Scanned:
    """What the per-line loop counted."""

    lines: int
    examples: int
    invalid: int
    blank: int
    too_long: int


def _size(f: IO[bytes]) -> int | None:
    """The stream's size in bytes when it is a regular file (not a pipe), for progress."""
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _scan(
    f: IO[bytes],
    col: Collector,
    tally: Tally,
    dups: Duplicates,
    style: StyleSpec | None,
    max_line_bytes: int,
    meter: Meter,
) -> _Scanned:
    """The per-line loop."""
    add = col.add
    push_hash = dups.hashes.append
    push_line = dups.lines.append
    fast_parse = _fast_parser()
    add_simple = tally.add_simple
    readline = f.readline
    lineno = n_examples = invalid = blank = too_long = crlf = first_crlf = read = 0

    while True:
        raw = readline(max_line_bytes)
        if not raw:
            break
        lineno += 1
        read += len(raw)
        if not lineno & 4095:
            meter.update(read)
        if raw[-1:] != b"\n" and len(raw) >= max_line_bytes:
            size = len(raw)
            while True:  # skip to the end of this line without holding it
                chunk = readline(max_line_bytes)
                size += len(chunk)
                if not chunk or chunk[-1:] == b"\n":
                    break
            read += size - len(raw)
            add(
                lineno,
                "line-too-long",
                f"{size:,} bytes, over the {max_line_bytes:,}-byte limit; skipped: not checked "
                "and left out of the statistics (OpenAI cuts an example off at the model's "
                "context and still accepts the file)",
            )
            too_long += 1
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
        if (b"\\ud" in body or b"\\uD" in body) and has_surrogate(obj):
            add(lineno, "invalid-unicode", SURROGATE_MSG)
            invalid += 1
            continue
        if not add_simple(lineno, obj):
            found = check(obj)
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
    meter.update(read)
    return _Scanned(lineno, n_examples, invalid, blank, too_long)


_FAILED = object()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


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
