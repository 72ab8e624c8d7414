"""`distill validate`: the malformed corpus with exact expected problems, statistics and costs,
the CLI (exit codes, text and JSON output, --style), and the GreenLeaf seeds."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.cli import cli
from distill.stages.validate import (
    CODES,
    check_example,
    default_epochs,
    validate_file,
    validate_stream,
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "validate"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
SEEDS = ROOT / "seeds" / "greenleaf.jsonl"
STYLE = ROOT / "seeds" / "greenleaf.style.toml"
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."


def _example(user: str = "My order is late.", reply: str = "So sorry! I've flagged it.") -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
            {"role": "assistant", "content": reply},
        ]
    }


def _write(path: Path, examples: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
    return path


# ---------------------------------------------------------------- the corpus


def test_corpus_is_big_and_covers_every_format_code():
    assert len(EXPECTED) >= 25
    seen = {code for case in EXPECTED.values() for _, code in case["errors"] + case["warnings"]}
    # line-too-long needs a 20 MB line and style needs --style: both tested below
    assert set(CODES) - seen == {"line-too-long", "style"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_reports_exactly_the_expected_problems(name):
    case = EXPECTED[name]
    report = validate_file(CORPUS / name, model=case["model"] or "gpt-4o-mini")
    assert [[p.line, p.code] for p in report.errors] == case["errors"]
    assert [[p.line, p.code] for p in report.warnings] == case["warnings"]
    assert report.ok is (not case["errors"])
    for p in report.errors + report.warnings:
        text = p.format(name)
        assert text.startswith(f"{name}:{p.line}: {p.code}: " if p.line else f"{name}: {p.code}: ")
        assert "\n" not in text and len(p.message) > 10


def test_messages_say_what_and_where():
    r = validate_file(CORPUS / "invalid_json.jsonl")
    assert r.errors[0].message.startswith("Expecting")
    assert "column" in r.errors[0].message
    r = validate_file(CORPUS / "duplicates.jsonl")
    assert [w.message for w in r.warnings] == ["exact duplicate of line 2"] * 2
    r = validate_file(CORPUS / "weights.jsonl")
    assert "messages[1] weight must be 0 or 1, got 2" in r.errors[1].message
    r = validate_file(CORPUS / "non_utf8.jsonl")
    assert "0xff" in r.errors[0].message and "UTF-8" in r.errors[0].message
    r = validate_file(CORPUS / "system_prompts.jsonl")
    assert "'You are a helpful assistant.'" in r.warnings[0].message
    assert "(line 1, 10 of 12 examples)" in r.warnings[0].message


def test_a_line_over_the_size_limit_is_a_warning_and_the_file_is_accepted(tmp_path):
    # OpenAI cuts an example past the model's context off and still accepts the file
    good = [json.dumps(_example(f"question {i}")) + "\n" for i in range(12)]
    huge = json.dumps(_example("y" * 5000)) + "\n"
    path = tmp_path / "long.jsonl"
    path.write_text("".join(good[:3]) + huge + "".join(good[3:]), encoding="utf-8")
    report = validate_file(path, max_line_bytes=1000)
    assert report.ok and report.errors == []
    assert [(p.line, p.code) for p in report.warnings] == [(4, "line-too-long")]
    assert "left out of the statistics" in report.warnings[0].message
    assert report.stats["examples"] == 12 and report.stats["too_long_lines"] == 1
    assert report.stats["invalid_lines"] == 0  # it is not invalid, only not counted

    (tmp_path / "big.jsonl").write_bytes(
        b"".join(g.encode() for g in good)
        + b'{"messages": [{"role": "user", "content": "'
        + b"x" * (9 * 2**20)
        + b'"}]}\n'
    )
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "big.jsonl")])
    assert res.exit_code == 0, res.output
    assert "big.jsonl:13: line-too-long: " in res.output and "valid (1 warnings)" in res.output


def test_a_20_mb_line_is_reported_and_skipped_without_holding_it(tmp_path):
    import tracemalloc

    good = [json.dumps(_example(f"question {i}")).encode() + b"\n" for i in range(12)]
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.writelines(good[:5])
        f.write(b'{"messages": [{"role": "user", "content": "' + b"x" * (20 * 2**20) + b'"}]}\n')
        f.writelines(good[5:])
    tracemalloc.start()
    report = validate_file(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(p.line, p.code) for p in report.warnings] == [(6, "line-too-long")]
    assert "20,971,5" in report.warnings[0].message  # the line's real size, in bytes
    assert report.stats["examples"] == 12 and report.stats["lines"] == 13
    assert peak < 40 * 2**20  # the 20 MB line was never held whole


def test_line_limit_is_a_parameter_and_the_next_line_is_still_read():
    data = b"".join(json.dumps(_example(f"q{i}")).encode() + b"\n" for i in range(10))
    data = data.replace(b"q3", b"q3" + b"y" * 5000)
    report = validate_stream(io.BytesIO(data), "x.jsonl", max_line_bytes=1000)
    assert [(p.line, p.code) for p in report.errors] == [(None, "too-few-examples")]
    assert [(p.line, p.code) for p in report.warnings] == [(4, "line-too-long")]
    assert report.stats["lines"] == 10 and report.stats["examples"] == 9


def test_problems_beyond_the_per_code_cap_are_counted_not_kept():
    data = b"not json\n" * 30
    report = validate_stream(io.BytesIO(data), "x.jsonl", max_per_code=5)
    assert len(report.errors) == 6  # 5 invalid-json + too-few-examples
    assert report.counts["invalid-json"] == 30
    assert report.omitted() == {"invalid-json": 25}
    assert report.to_dict()["omitted"] == {"invalid-json": 25}


# ---------------------------------------------------------------- check_example (the library API)


def test_check_example_on_single_parsed_examples():
    assert check_example(_example()) == []
    codes = [p.code for p in check_example({"messages": [{"role": "user", "content": "hi"}]})]
    assert codes == ["no-assistant"]
    bad = {"messages": [{"role": "assistant", "content": "hi", "weight": 3}], "meta": {}}
    assert [p.code for p in check_example(bad)] == ["unknown-key", "bad-weight"]
    assert [p.code for p in check_example([1, 2])] == ["not-object"]
    assert [
        p.code for p in check_example({"messages": [{"role": "user", "content": "\ud800"}]})
    ] == [
        "no-assistant",
        "invalid-unicode",
    ]
    tool_reply = {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "f", "arguments": "{}"},
    }
    assert check_example({"messages": [{"role": "user", "content": "x"}, tool_reply]}) == []


# ---------------------------------------------------------------- statistics, tokens, cost


@pytest.mark.parametrize(
    ("n", "epochs"),
    [
        (1, 25),
        (3, 25),
        (5, 20),
        (10, 10),
        (33, 4),
        (34, 3),
        (8333, 3),
        (8334, 2),
        (12_501, 1),
        (30_000, 1),
    ],
)
def test_default_epochs_follow_openais_rule(n, epochs):
    assert default_epochs(n) == epochs


def _cookbook_tokens(example: dict) -> int:
    """The cookbook's count: 3 per message + every value's tokens + 1 per name, + 3."""
    import quicktok

    enc = quicktok.get_encoding("o200k_base")
    total = 3
    for m in example["messages"]:
        total += 3 + sum(len(enc.encode(v)) for v in m.values())
        total += 1 if "name" in m else 0
    return total


def test_token_counts_match_the_cookbook_and_cost_uses_the_price_table(tmp_path):
    examples = [_example(f"My order GL-{i} is late, it was due {i} days ago.") for i in range(12)]
    examples[3]["messages"][1]["name"] = "alice"
    examples[5]["messages"] += [
        {"role": "user", "content": "Thanks! And my fern has brown tips?"},
        {
            "role": "assistant",
            "content": "Glad to help! Mist it daily and move it out of direct sun.",
        },
    ]
    path = _write(tmp_path / "t.jsonl", examples)
    counts = sorted(_cookbook_tokens(e) for e in examples)
    report = validate_file(path, model="gpt-4o")
    s = report.stats
    assert report.ok
    assert s["tokens_per_example"]["min"] == counts[0]
    assert s["tokens_per_example"]["max"] == counts[-1]
    assert s["tokens_per_example"]["total"] == sum(counts)
    assert s["tokens_per_example"]["p95"] == counts[11]  # nearest rank: ceil(0.95 * 12) = 12th
    assert s["tokens_per_example"]["mean"] == round(sum(counts) / 12, 2)
    assert s["model"] == "gpt-4o-2024-08-06" and s["token_limit"] == 65536
    assert s["epochs"] == 9  # ceil(100 / 12)
    assert s["billed_tokens"] == 9 * sum(counts)
    assert s["estimated_cost_usd"] == round(9 * sum(counts) * 25.00 / 1e6, 4)
    assert s["roles"] == {"assistant": 13, "function": 0, "system": 12, "tool": 0, "user": 13}
    assert s["messages_per_example"] == {"min": 3, "mean": 3.17, "p95": 5, "max": 5, "total": 38}


def test_token_limit_comes_from_the_models_table():
    path = CORPUS / "too_many_tokens.jsonl"
    assert validate_file(path, model="gpt-3.5-turbo").warnings[0].code == "too-many-tokens"
    report = validate_file(path, model="gpt-4o-mini")
    assert report.warnings == [] and report.stats["over_token_limit"] == 0
    # billing counts at most the limit per example
    capped = validate_file(path, model="gpt-3.5-turbo").stats
    assert capped["billed_tokens_per_epoch"] < report.stats["billed_tokens_per_epoch"]
    unknown = validate_file(path, model="local:smollm2-135m").stats
    assert unknown["estimated_cost_usd"] is None and unknown["token_limit"] == 16385


def test_token_counts_survive_many_batches(tmp_path):
    examples = [_example(f"Order number {i} " * (i % 7 + 1)) for i in range(9000)]
    path = _write(tmp_path / "big.jsonl", examples)
    s = validate_file(path).stats
    assert s["examples"] == 9000
    assert s["tokens_per_example"]["total"] == sum(_cookbook_tokens(e) for e in examples)
    assert s["epochs"] == 2 and s["billed_tokens"] == 2 * s["tokens_per_example"]["total"]


# ---------------------------------------------------------------- --style


def test_style_flags_every_reply_that_breaks_the_voice(tmp_path, style):
    examples = [
        _example(f"Where is order GL-{i}?", "So sorry! I've flagged it, tracking within the hour.")
        for i in range(10)
    ]
    examples[2]["messages"][2]["content"] = "**Your order** is delayed."
    examples[4]["messages"][0]["content"] = "You are a pirate."
    del examples[7]["messages"][0]
    path = _write(tmp_path / "s.jsonl", examples)
    report = validate_file(path, style=style)
    assert report.ok  # style problems are warnings
    style_lines = [(p.line, p.message.split(":")[0]) for p in report.warnings if p.code == "style"]
    assert (3, "messages[2] (assistant)") in style_lines
    assert (5, "messages[0] (system)") in style_lines
    assert any(line == 8 and "no system prompt" in msg for line, msg in style_lines)
    assert {line for line, _ in style_lines} == {3, 5, 8}
    assert any("no-markdown" in p.message for p in report.warnings if p.line == 3)


# ---------------------------------------------------------------- the CLI


def test_cli_valid_file_exits_0_with_a_summary(tmp_path):
    res = CliRunner().invoke(cli, ["validate", str(CORPUS / "valid.jsonl")])
    assert res.exit_code == 0, res.output
    assert "10 valid of 10 lines" in res.output
    assert "billed tokens" in res.output and "valid (0 warnings)" in res.output


def test_cli_invalid_file_exits_1_with_file_line_code_message():
    path = CORPUS / "weights.jsonl"
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 1
    lines = res.output.splitlines()
    assert (
        f"{path}:2: weight-not-assistant: messages[0] has a weight but only assistant messages may"
        in lines
    )
    assert f"{path}:4: bad-weight: messages[1] weight must be 0 or 1, got 2" in lines
    assert "invalid: 4 errors" in res.output


def test_cli_reads_stdin():
    data = (CORPUS / "valid.jsonl").read_bytes()
    res = CliRunner().invoke(cli, ["validate", "-", "--format", "json"], input=data)
    assert res.exit_code == 0 and json.loads(res.output)["stats"]["examples"] == 10
    res = CliRunner().invoke(cli, ["validate", "-"], input=b"[1]\n")
    assert res.exit_code == 1 and "<stdin>:1: not-object: " in res.output


def test_cli_json_output_is_one_document_with_errors_warnings_stats():
    res = CliRunner().invoke(
        cli, ["validate", str(CORPUS / "blank_lines.jsonl"), "--format", "json"]
    )
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert doc["valid"] is True and doc["errors"] == []
    assert [(w["line"], w["code"]) for w in doc["warnings"]] == [
        (3, "blank-line"),
        (12, "blank-line"),
    ]
    assert doc["stats"]["examples"] == 10 and doc["stats"]["blank_lines"] == 2
    res = CliRunner().invoke(cli, ["validate", str(CORPUS / "scalars.jsonl"), "--format", "json"])
    assert res.exit_code == 1 and json.loads(res.output)["error_count"] == 3


def test_cli_text_output_is_capped_per_code_and_json_is_not(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"{oops\n" * 60)
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 1
    assert len(re.findall(r"^\S+:\d+: invalid-json: ", res.output, re.M)) == 50
    assert f"{path}: invalid-json: ... and 10 more" in res.output
    assert "messages" not in res.output  # no statistics row without a valid example
    doc = json.loads(CliRunner().invoke(cli, ["validate", str(path), "--format", "json"]).output)
    assert len([e for e in doc["errors"] if e["code"] == "invalid-json"]) == 60


def test_cli_style_warnings_and_bad_inputs(tmp_path):
    path = _write(
        tmp_path / "x.jsonl",
        [_example(f"q{i}", "Here is a long and rambling answer. " * 8) for i in range(10)],
    )
    res = CliRunner().invoke(cli, ["validate", str(path), "--style", str(STYLE)])
    assert res.exit_code == 0
    assert (
        f"{path}:1: style: messages[2] (assistant): too-long: 56 words, the limit is 45"
        in res.output
    )
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 1 and "no such file" in res.output and "Traceback" not in res.output
    bad_style = tmp_path / "bad.style.toml"
    bad_style.write_text('name = "x"\nsystem_prompt = "y"\ncolour = 1\n')
    res = CliRunner().invoke(cli, ["validate", str(path), "--style", str(bad_style)])
    assert res.exit_code == 1 and "colour: unknown key" in res.output


def test_real_process_exit_codes():
    ok = subprocess.run(
        [sys.executable, "-m", "distill", "validate", str(SEEDS)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "distill", "validate", str(CORPUS / "deep_nesting.jsonl")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "deep_nesting.jsonl:2: too-deep:" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


# ---------------------------------------------------------------- seeds


def test_seeds_are_varied_greenleaf_conversations_that_pass_style(style):
    examples = [json.loads(line) for line in SEEDS.read_text(encoding="utf-8").splitlines()]
    assert len(examples) >= 15
    assert all(set(e) == {"messages"} for e in examples)
    assert all(e["messages"][0] == {"role": "system", "content": SYSTEM} for e in examples)
    assert {"role": "user", "content": "My order is late."} in examples[0]["messages"]
    assert {
        "role": "assistant",
        "content": "So sorry for the wait! I've flagged it, tracking within the hour.",
    } in examples[0]["messages"]
    assert sum(len(e["messages"]) > 3 for e in examples) >= 3  # some multi-turn
    text = " ".join(m["content"].lower() for e in examples for m in e["messages"])
    for topic in (
        "late",
        "lost",
        "damaged",
        "water",
        "light",
        "return",
        "refund",
        "subscription",
        "gift",
        "tax return",
    ):
        assert topic in text, topic
    report = validate_file(SEEDS, style=style)
    assert report.ok and report.warnings == [], [p.format("seeds") for p in report.warnings]


def test_cli_seeds_pass_with_style():
    res = CliRunner().invoke(cli, ["validate", str(SEEDS), "--style", str(STYLE)])
    assert res.exit_code == 0, res.output
    assert "valid (0 warnings)" in res.output


def test_duplicates_found_the_same_when_hashes_spill_to_disk(tmp_path, monkeypatch):
    import distill.validation.scan as v

    examples = [_example(f"question {i % 13}") for i in range(40)]  # lines 14.. repeat 1..13
    path = _write(tmp_path / "d.jsonl", examples)
    in_memory = [(p.line, p.message) for p in validate_file(path).warnings]
    import tempfile

    monkeypatch.setattr(v, "DEDUPE_CHUNK", 4)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[list[str]] = []
    spill = v.Duplicates.spill

    def spy(self):
        spill(self)
        seen.append(sorted(p.name for p in Path(self.tmp.name).iterdir()))

    monkeypatch.setattr(v.Duplicates, "spill", spy)
    spilled_report = validate_file(path, max_per_code=20)
    spilled = [(p.line, p.message) for p in spilled_report.warnings]
    assert in_memory[:20] == spilled and len(in_memory) == 27
    assert in_memory[0] == (14, "exact duplicate of line 1")
    assert in_memory[-1] == (40, "exact duplicate of line 1")
    assert spilled_report.counts["duplicate"] == 27 and spilled_report.stats["duplicates"] == 27
    assert len(seen) == 11 and seen[-1]  # 40 examples / 4 per chunk, plus the final spill
    assert not list(tmp_path.glob("distill-validate-*"))  # bucket files are cleaned up


def test_a_big_file_shows_progress_on_stderr_and_a_small_one_prints_nothing(tmp_path, monkeypatch):
    import distill.progress as progress

    path = _write(tmp_path / "data.jsonl", [_example(f"question {i}") for i in range(20)])
    small = CliRunner().invoke(cli, ["validate", str(path)])
    assert small.exit_code == 0 and small.stderr == ""

    monkeypatch.setattr(progress, "BIG_BYTES", 1)  # as if the file were 1M lines
    monkeypatch.setattr(progress._Lines, "QUIET_S", 0.0)
    big = CliRunner().invoke(cli, ["validate", str(path)])
    assert big.exit_code == 0 and big.stdout == small.stdout
    assert big.stderr.startswith("validate: ") and "validate: done, " in big.stderr
