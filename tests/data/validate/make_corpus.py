"""Writes the malformed / edge-case corpus and expected.json (the exact problems expected).

    python tests/data/validate/make_corpus.py

Each case is: file name, its bytes, the exact (line, code) errors and warnings `distill validate`
must report (line None = the file as a whole), and optionally the --model to check against.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."
OTHER_SYSTEM = "You are a helpful assistant."


def ex(
    user: str = "My order is late.",
    reply: str = "So sorry! I've flagged it.",
    system=SYSTEM,
    **extra,
):
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": reply},
    ]
    return {"messages": msgs, **extra}


def line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"


def valid(n: int = 10, start: int = 0, **kw) -> list[bytes]:
    return [
        line(ex(f"Question number {start + i}: where is order GL-{1000 + start + i}?", **kw))
        for i in range(n)
    ]


def insert(lines: list[bytes] | bytes, at: int, new: bytes) -> bytes:
    """`new` becomes line `at` (1-based)."""
    out = lines.splitlines(keepends=True) if isinstance(lines, bytes) else list(lines)
    out.insert(at - 1, new)
    return b"".join(out)


def msgs_line(messages, **extra) -> bytes:
    return line({"messages": messages, **extra})


U = {"role": "user", "content": "Hi, my plant is wilting."}
A = {"role": "assistant", "content": "Sorry to hear that! Water it today."}
S = {"role": "system", "content": SYSTEM}

CASES: list[tuple[str, bytes, list, list, str | None]] = []


def case(name, data, errors=(), warnings=(), model=None):
    CASES.append((name, data, [list(e) for e in errors], [list(w) for w in warnings], model))


V = valid()
case("valid.jsonl", b"".join(V))
case("valid_no_trailing_newline.jsonl", b"".join(V)[:-1])
case(
    "invalid_json.jsonl",
    insert(V, 4, b'{"messages": [{"role": "user", "content": "hi"}\n'),
    [(4, "invalid-json")],
)
case(
    "trailing_comma.jsonl",
    insert(V, 2, b'{"messages": [{"role": "user", "content": "hi"},]}\n'),
    [(2, "invalid-json")],
)
case("extra_data.jsonl", insert(V, 3, line(ex())[:-1] + b' {"x": 1}\n'), [(3, "invalid-json")])
case("single_quotes.jsonl", insert(V, 5, b"{'messages': []}\n"), [(5, "invalid-json")])
case("truncated_last_line.jsonl", b"".join(V) + line(ex())[:40], [(11, "truncated-line")])
case(
    "non_utf8.jsonl",
    insert(V, 3, line(ex("caf\u00e9 plant")).replace("\u00e9".encode(), b"\xff")),
    [(3, "invalid-utf8")],
)
case(
    "latin1.jsonl",
    insert(
        V,
        7,
        json.dumps(ex("Ma plante est ab\u00eem\u00e9e"), ensure_ascii=False).encode("latin-1")
        + b"\n",
    ),
    [(7, "invalid-utf8")],
)
case("bom.jsonl", b"\xef\xbb\xbf" + b"".join(V), [(1, "bom")])
case("crlf.jsonl", b"".join(V).replace(b"\n", b"\r\n"), [], [(1, "crlf")])
case(
    "blank_lines.jsonl",
    insert(V, 3, b"\n") + b"   \t\n",
    [],
    [(3, "blank-line"), (12, "blank-line")],
)
case("top_level_array.jsonl", insert(V, 5, b"[" + line(ex())[:-1] + b"]\n"), [(5, "not-object")])
case(
    "whole_file_array.jsonl",
    b"[" + b", ".join(x[:-1] for x in V) + b"]\n",
    [(1, "not-object"), (None, "too-few-examples")],
)
case(
    "pretty_printed.jsonl",
    json.dumps([ex()], indent=2).encode() + b"\n",
    [
        (1, "invalid-json"),
        (2, "invalid-json"),
        (3, "invalid-json"),
        (4, "invalid-json"),
        (5, "invalid-json"),
        (6, "invalid-json"),
        (7, "invalid-json"),
        (8, "invalid-json"),
        (9, "invalid-json"),
        (10, "invalid-json"),
        (11, "invalid-json"),
        (12, "invalid-json"),
        (13, "invalid-json"),
        (14, "invalid-json"),
        (15, "invalid-json"),
        (16, "invalid-json"),
        (17, "invalid-json"),
        (18, "invalid-json"),
        (None, "too-few-examples"),
    ],
)
case(
    "scalars.jsonl",
    insert(insert(insert(V, 2, b"42\n"), 4, b'"a string"\n'), 6, b"null\n"),
    [(2, "not-object"), (4, "not-object"), (6, "not-object")],
)
case("deep_nesting.jsonl", insert(V, 2, b"[" * 100_000 + b"]" * 100_000 + b"\n"), [(2, "too-deep")])
case(
    "deep_content.jsonl",
    insert(
        V, 6, b'{"messages": [{"role": "user", "content": ' + b"[" * 5000 + b"]" * 5000 + b"}]}\n"
    ),
    [(6, "too-deep")],
)
case(
    "legacy_prompt_completion.jsonl",
    insert(V, 1, line({"prompt": "Late order?", "completion": "Sorry!"})),
    [(1, "unknown-key"), (1, "missing-messages")],
)
case("unknown_top_key.jsonl", insert(V, 8, line(ex(meta={"topic": "late"}))), [(8, "unknown-key")])
case(
    "messages_not_list.jsonl",
    insert(V, 2, line({"messages": {"role": "user", "content": "hi"}})),
    [(2, "messages-not-list")],
)
case("messages_empty.jsonl", insert(V, 10, line({"messages": []})), [(10, "messages-empty")])
case(
    "message_not_object.jsonl",
    insert(V, 3, msgs_line(["hi there", A])),
    [
        (3, "message-not-object"),
    ],
)
case(
    "unknown_role.jsonl",
    insert(
        insert(V, 2, msgs_line([{"role": "bot", "content": "x"}, A])),
        5,
        msgs_line([{"role": 5, "content": "x"}, A]),
    ),
    [(2, "unknown-role"), (5, "unknown-role")],
)
case(
    "missing_role.jsonl", insert(V, 4, msgs_line([{"content": "hello"}, A])), [(4, "missing-role")]
)
case(
    "missing_content.jsonl",
    insert(V, 9, msgs_line([{"role": "user"}, A])),
    [(9, "missing-content")],
)
case(
    "null_content.jsonl",
    insert(V, 2, msgs_line([{"role": "user", "content": None}, A])),
    [(2, "null-content")],
)
case(
    "content_parts.jsonl",
    insert(V, 6, msgs_line([{"role": "user", "content": [{"type": "text", "text": "hi"}]}, A])),
    [(6, "content-type")],
)
case(
    "unknown_message_key.jsonl",
    insert(V, 3, msgs_line([{"role": "user", "content": "hi", "timestamp": 1}, A])),
    [(3, "unknown-message-key")],
)
case(
    "weights.jsonl",
    insert(
        insert(
            insert(
                insert(V, 2, msgs_line([{**U, "weight": 1}, A])),
                4,
                msgs_line([U, {**A, "weight": 2}]),
            ),
            6,
            msgs_line([U, {**A, "weight": True}]),
        ),
        8,
        msgs_line([U, {**A, "weight": 0.5}]),
    ),
    [(2, "weight-not-assistant"), (4, "bad-weight"), (6, "bad-weight"), (8, "bad-weight")],
)
case(
    "weight_ok.jsonl",
    insert(
        V, 2, msgs_line([S, U, {**A, "weight": 0}, U, {**A, "content": "Try this!", "weight": 1}])
    ),
)
case(
    "nothing_to_learn.jsonl",
    insert(V, 5, msgs_line([S, U, {**A, "weight": 0}])),
    [],
    [(5, "nothing-to-learn")],
)
case("no_assistant.jsonl", insert(V, 7, msgs_line([S, U])), [(7, "no-assistant")])
case(
    "bad_types.jsonl",
    insert(
        insert(insert(V, 1, msgs_line([{**U, "name": 5}, A])), 3, msgs_line([S, U, A], tools={})),
        5,
        msgs_line([S, U, A], parallel_tool_calls="yes"),
    ),
    [(1, "bad-type"), (3, "bad-type"), (5, "bad-type")],
)
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "track", "arguments": '{"order": "GL-1"}'},
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "track",
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
        },
    }
]
case(
    "tools_ok.jsonl",
    insert(
        V,
        3,
        msgs_line(
            [
                S,
                {"role": "user", "content": "Where is GL-1?"},
                {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "out for delivery"},
                {"role": "assistant", "content": "Good news, it's out for delivery today!"},
            ],
            tools=TOOLS,
        ),
    ),
)
case(
    "nan.jsonl",
    insert(V, 4, b'{"messages": [{"role": "assistant", "content": "x", "weight": NaN}]}\n'),
    [(4, "invalid-json")],
)
case(
    "lone_surrogate.jsonl",
    insert(
        V,
        2,
        b'{"messages": [{"role": "user", "content": "bad \\ud800 text"}, {"role": "assistant", "content": "ok"}]}\n',
    ),
    [(2, "invalid-unicode")],
)
case(
    "empty_content.jsonl",
    insert(V, 3, msgs_line([S, U, {**A, "content": ""}, U, A])),
    [],
    [(3, "empty-content")],
)
case("too_few_examples.jsonl", b"".join(valid(9)), [(None, "too-few-examples")])
case("empty_file.jsonl", b"", [(None, "too-few-examples")])
case(
    "duplicates.jsonl",
    insert(insert(V, 7, V[1]), 11, V[1]),
    [],
    [(7, "duplicate"), (11, "duplicate")],
)
case(
    "system_prompts.jsonl",
    insert(
        insert(
            insert(V, 4, line(ex("odd one", system=OTHER_SYSTEM))),
            6,
            line(ex("no prompt", system=None)),
        ),
        9,
        line(ex("odd two", system=OTHER_SYSTEM)),
    ),
    [],
    [(4, "system-prompt-differs"), (6, "no-system-prompt"), (9, "system-prompt-differs")],
)
case(
    "no_system_prompt_anywhere.jsonl",
    b"".join(valid(10, system=None)),
    [],
    [(None, "no-system-prompt")],
)
case(
    "too_many_tokens.jsonl",
    insert(V, 2, line(ex("plant " * 17_000))),
    [],
    [(2, "too-many-tokens")],
    "gpt-3.5-turbo",
)
case(
    "utf16.jsonl",
    b"".join(V[:3]).decode().encode("utf-16"),
    [
        (1, "invalid-utf8"),
        (2, "invalid-json"),
        (3, "invalid-json"),
        (4, "truncated-line"),
        (None, "too-few-examples"),
    ],
)


def main() -> None:
    expected = {}
    for name, data, errors, warnings, model in CASES:
        (HERE / name).write_bytes(data)
        expected[name] = {"errors": errors, "warnings": warnings, "model": model}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"{len(CASES)} files")


if __name__ == "__main__":
    main()
