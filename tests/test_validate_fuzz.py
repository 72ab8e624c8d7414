"""`distill validate` never raises: arbitrary bytes, and arbitrary JSON shaped like examples."""

from __future__ import annotations

import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.stages.validate import CODES, check_example, validate_stream

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.sampled_from(["system", "user", "assistant", "tool", "function", "bot", "", None])
keys = st.sampled_from(
    ["role", "content", "name", "weight", "tool_calls", "function_call", "tool_call_id", "x"]
)
messages = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"role": roles, "content": st.one_of(st.text(max_size=30), json_values)}
        ),
        st.dictionaries(
            keys, st.one_of(roles, json_values, st.sampled_from([0, 1, 2, True])), max_size=5
        ),
        json_values,
    ),
    max_size=5,
)
examples = st.one_of(
    st.fixed_dictionaries({"messages": messages}),
    st.dictionaries(
        st.sampled_from(["messages", "tools", "functions", "parallel_tool_calls", "meta"]),
        st.one_of(messages, json_values),
        max_size=4,
    ),
    json_values,
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_consistent(report) -> None:
    assert all(p.code in CODES for p in report.errors + report.warnings)
    assert all(p.severity == "error" for p in report.errors)
    assert all(p.severity == "warning" for p in report.warnings)
    assert report.ok == (not report.errors)
    json.dumps(report.to_dict())  # the --format json document always serialises


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data):
    _assert_consistent(validate_stream(io.BytesIO(data), "fuzz.jsonl"))


@FAST
@given(
    st.lists(
        st.sampled_from(
            [
                b"{",
                b"}",
                b"[",
                b"]",
                b'"',
                b"\\",
                b"\\ud800",
                b"\n",
                b"\r\n",
                b"\xef\xbb\xbf",
                b"\xff",
                b'"messages"',
                b":",
                b",",
                b"null",
                b"NaN",
                b" ",
                b'"role"',
                b'"assistant"',
                b'"content"',
            ]
        ),
        max_size=60,
    )
)
def test_json_like_fragments_never_raise(parts):
    _assert_consistent(
        validate_stream(io.BytesIO(b"".join(parts)), "fuzz.jsonl", max_line_bytes=64)
    )


@FAST
@given(st.lists(examples, max_size=12))
def test_arbitrary_example_shapes_never_raise(objs):
    data = b"".join(json.dumps(o).encode() + b"\n" for o in objs)
    report = validate_stream(io.BytesIO(data), "fuzz.jsonl")
    _assert_consistent(report)
    for o in objs:
        problems = check_example(o)
        assert all(p.code in CODES for p in problems)
    # a line is counted as an example exactly when check_example finds no error in it
    valid = sum(1 for o in objs if not any(p.severity == "error" for p in check_example(o)))
    assert report.stats["examples"] == valid
