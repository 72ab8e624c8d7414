"""Rubric rules: a sentence a judge model rules on, in generate (re-asked like a failed
regex, cached, costed), in `validate --style --judge`, and skipped with one line when no
capable judge is configured."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import test_eval
from click.testing import CliRunner

from distill.backends import FakeBackend
from distill.cli import cli
from distill.errors import ConfigError
from distill.models import Price
from distill.runs import read_jsonl
from distill.stages.generate import GenerateOptions, generate
from distill.style import StyleSpec

ROOT = Path(__file__).resolve().parent.parent
STYLE = ROOT / "seeds" / "greenleaf.style.toml"
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."
RUBRIC = """
[[rules]]
name = "names-a-time"
why = "says when the customer will hear back"
rubric = "tells the customer when something will happen (a time or a day)"
"""
REPLY_OK = "Thanks for asking! I've checked it and you'll have an email by 5pm today."
REPLY_VAGUE = "Thanks for asking! I've checked it and you'll have an email soon."


def spec_text() -> str:
    text = STYLE.read_text()
    i = text.index("[scope]")
    return (text[:i] + RUBRIC + "\n" + text[i:]).replace("turns = [1, 1, 2, 3]", "turns = [1]")


@pytest.fixture
def shop(tmp_path) -> Path:
    seeds = tmp_path / "shop.jsonl"
    line = {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Where is my order GL-48213?"},
            {"role": "assistant", "content": "So sorry! I've chased it, tracking by noon."},
        ]
    }
    seeds.write_text(json.dumps(line) + "\n")
    (tmp_path / "shop.style.toml").write_text(spec_text())
    return seeds


def verdict(passes: bool, reason: str) -> dict:
    return {"verdicts": [{"name": "names-a-time", "passes": passes, "reason": reason}]}


def is_judge(messages) -> bool:
    return messages[-1]["content"].startswith("You judge whether")


def test_a_rubric_rule_loads_and_the_regex_check_leaves_it_to_a_judge(tmp_path):
    path = tmp_path / "x.style.toml"
    path.write_text(spec_text())
    spec = StyleSpec.load(path)
    assert [r.name for r in spec.rubrics] == ["names-a-time"]
    assert spec.check_reply(REPLY_VAGUE) == []  # only a judge can rule on it
    path.write_text(spec_text().replace('rubric = "tells', 'must_match = "x"\nrubric = "tells'))
    with pytest.raises(ConfigError, match="needs exactly one of .*rubric"):
        StyleSpec.load(path)


def test_generate_reasks_a_reply_the_judge_fails_and_counts_the_judge_calls(shop):
    def answer(messages):
        if is_judge(messages):
            ok = "by 5pm today" in messages[-1]["content"]
            return verdict(ok, "gives a time" if ok else "no time or day given")
        reasked = any("rejected" in str(m.get("content")) for m in messages[2:])
        reply = REPLY_OK if reasked else REPLY_VAGUE
        return {"exchanges": [{"user": "Any news on my parcel?", "assistant": reply}]}

    teacher = FakeBackend(default=answer, name="teacher", price=Price(1.0, 1.0))
    opts = GenerateOptions(seeds=shop, n=1, teacher="fake:teacher", concurrency=1)
    result = generate(opts, backend=teacher)
    assert result.rubric_note == "rubric rules (names-a-time) judged by fake:teacher"
    gen = list(read_jsonl(Path("outputs") / "shop" / "generated.jsonl"))
    assert len(gen) == 1 and gen[0]["messages"][-1]["content"] == REPLY_OK
    assert gen[0]["meta"]["attempts"] == 2
    reask = [m for m in teacher.requests if not is_judge(m)][1][-1]["content"]
    assert "names-a-time" in reask and "judged by fake:teacher: no time or day given" in reask
    judged = [m for m in teacher.requests if is_judge(m)]
    assert len(judged) == 2
    # every call, the judge's included, is in the progress count and the cost
    assert result.progress.calls == 4
    assert result.progress.cost_usd > 0
    again = FakeBackend(default=answer, name="teacher")
    generate(GenerateOptions(seeds=shop, n=1, teacher="fake:teacher"), backend=again)
    assert again.requests == []  # the judge's verdicts come from calls.sqlite too


@pytest.mark.parametrize(
    ("judge", "why"),
    [
        ("none", "turned off with --judge none"),
        ("local:smollm2-135m", "local:smollm2-135m is a small local model, too weak to judge"),
    ],
)
def test_generate_with_no_capable_judge_says_the_rubric_rules_were_skipped(shop, judge, why):
    def answer(messages):
        assert not is_judge(messages)
        return {"exchanges": [{"user": "Any news on my parcel?", "assistant": REPLY_VAGUE}]}

    opts = GenerateOptions(seeds=shop, n=1, teacher="fake:t", judge=judge, concurrency=1)
    result = generate(opts, backend=FakeBackend(default=answer))
    assert result.rubric_note == (
        f"1 rubric rule(s) not judged (names-a-time): {why}; pass --judge MODEL "
        "(e.g. openai:gpt-4o-mini) to judge them"
    )


def test_validate_judges_every_reply_and_lists_the_failures_by_line(shop, tmp_path):
    from fake_openai_server import FakeOpenAIServer

    data = tmp_path / "data.jsonl"
    rows = [REPLY_OK, REPLY_VAGUE] + [REPLY_OK] * 8  # 10: OpenAI's minimum
    data.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": f"Where is order GL-{i}?"},
                        {"role": "assistant", "content": r},
                    ]
                }
            )
            + "\n"
            for i, r in enumerate(rows)
        )
    )
    spec = str(shop.with_name("shop.style.toml"))

    def judge(body):
        ok = "by 5pm today" in body["messages"][-1]["content"]
        return json.dumps(verdict(ok, "gives a time" if ok else "no time or day given"))

    skipped = CliRunner().invoke(cli, ["validate", str(data), "--style", spec])
    assert (
        "1 rubric rule(s) not judged (names-a-time): no judge configured; pass --judge MODEL"
        in skipped.output
    )
    env = {"OPENAI_API_KEY": "k"}
    with FakeOpenAIServer(judge) as server:
        env["OPENAI_BASE_URL"] = server.url
        args = ["validate", str(data), "--style", spec, "--judge", "gpt-4o-mini"]
        res = CliRunner().invoke(cli, args, env=env)
        sent = server.counts["requests"]
        again = CliRunner().invoke(cli, args, env=env)
        assert server.counts["requests"] == sent  # cached: judged once
    assert res.exit_code == 0, res.output
    assert (
        f"{data}:2: rubric: messages[2]: names-a-time: says when the customer will hear back "
        "(judged by openai:gpt-4o-mini: no time or day given)"
    ) in res.output
    assert res.output.count(": rubric: ") == 1
    assert "rubric rules judged by openai:gpt-4o-mini: names-a-time 9/10 replies pass" in res.output
    assert "10 of 10 from calls.sqlite" in again.output


def test_pass_rates_per_rule_compare_student_and_base_with_intervals(tmp_path, shop):
    from distill.calls import CallLog
    from distill.rubric import RubricJudge, pass_rates

    def answer(messages):
        ok = "by 5pm today" in messages[-1]["content"]
        return verdict(ok, "gives a time" if ok else "no time given")

    spec = StyleSpec.load(shop.with_name("shop.style.toml"))
    calls = CallLog(tmp_path / "calls.sqlite")
    judge = RubricJudge(spec, FakeBackend(default=answer, name="judge"), calls, "eval")
    items = [
        (f"Where is GL-{i}?", REPLY_OK + f" Ref {i}.", REPLY_VAGUE + f" Ref {i}.") for i in range(6)
    ]
    items[0] = (items[0][0], REPLY_VAGUE, REPLY_VAGUE)
    (rate,) = asyncio.run(pass_rates(judge, items))
    calls.close()
    assert rate.rule == "names-a-time" and rate.judge == "fake:judge"
    assert rate.student.mean == pytest.approx(5 / 6) and rate.base.mean == 0.0
    assert rate.gain.lo > 0 and rate.gain.n == 6
    assert rate.to_dict()["student"]["n"] == 6


eval_run = test_eval.eval_run  # the fixture: four held-out examples, student, base, probe


def test_eval_reports_each_rubric_rule_for_student_and_base_or_says_it_was_skipped(
    eval_run, tmp_path, capsys
):
    from test_eval import fakes, judging

    import distill.stages.evaluate as ev

    path = tmp_path / "eval.style.toml"
    path.write_text(spec_text())
    spec = StyleSpec.load(path)

    def judge(messages):
        if not is_judge(messages):
            return judging(messages)  # the win-rate judge's pairs
        reply = messages[-1]["content"].split('"""')[1]
        ok = "today" in reply
        return verdict(ok, "says today" if ok else "no time given")

    backends = {**fakes(), "fake:judge": FakeBackend(default=judge, name="judge")}
    report = ev.evaluate(
        eval_run,
        judge="fake:judge",
        backends=backends,
        embedder=None,
        probe_path=eval_run.probe,
        style=spec,
    )
    (rule,) = report["rubric"]["rules"]
    assert rule["rule"] == "names-a-time" and rule["judge"] == "fake:judge"
    # "today" is in the student's ex1 and ex2 replies, in none of the base's
    assert rule["student"]["mean"] == 0.5 and rule["base"]["mean"] == 0.0
    assert rule["gain"]["mean"] == 0.5 and rule["gain"]["n"] == 4
    assert rule["gain"]["lo"] <= 0.5 <= rule["gain"]["hi"]
    from distill.commands.evaluate import print_summary

    print_summary(report)
    assert "rubric names-a-time (judged by fake:judge): student 50% (CI" in capsys.readouterr().out

    none = ev.evaluate(
        eval_run, backends=fakes(), embedder=None, probe_path=eval_run.probe, style=spec
    )
    assert none["rubric"]["skipped"].startswith("1 rubric rule(s) not judged (names-a-time): ")
