"""The per-example rules of OpenAI's chat fine-tuning format: which keys, roles, types and
weights an example may have. `check_example` is the library entry; `distill review` and
`distill train` use it too."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from distill.validation.problems import CODES, Problem

TOP_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight"}
)
ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
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


def check(obj: Any) -> list[tuple[str, str]]:
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
    problems = [Problem(code, msg) for code, msg in check(obj)]
    if isinstance(obj, dict) and has_surrogate(obj):
        problems.append(Problem("invalid-unicode", SURROGATE_MSG))
    return problems


def is_valid_example(obj: Any) -> bool:
    return not any(p.severity == "error" for p in check_example(obj))


SURROGATE_MSG = "a string holds a lone surrogate escape (like \\ud800) that is not valid Unicode"


def has_surrogate(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (TypeError, ValueError, RecursionError):
        return False
    return False
