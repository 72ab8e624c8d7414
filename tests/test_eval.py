"""`distill eval` with fake backends: every metric against hand-computed values, caching,
the CLI's errors, and model text shown as text in report.html."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import STYLE, SYSTEM

from distill.backends.base import FakeBackend
from distill.cli import cli
from distill.runs import atomic_write_jsonl, read_jsonl
from distill.stages import evaluate as ev
from distill.stages import metrics

# -- pure metrics -------------------------------------------------------------------------


def test_bootstrap_interval_is_deterministic_and_hand_checkable():
    # two items 0 and 1: a resample's mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4,
    # so the 2.5th percentile is 0 and the 97.5th is 1.
    e = metrics.bootstrap([0, 1])
    assert (e.mean, e.lo, e.hi, e.n) == (0.5, 0.0, 1.0, 2)
    assert metrics.bootstrap([1, 1, 1]).to_dict() == {"mean": 1.0, "lo": 1.0, "hi": 1.0, "n": 3}
    vals = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    a, b = metrics.bootstrap(vals), metrics.bootstrap(vals)
    assert a == b
    assert a.mean == 0.7 and 0.3 <= a.lo < 0.7 < a.hi <= 1.0
    assert metrics.bootstrap([]).to_dict() == {"mean": None, "lo": None, "hi": None, "n": 0}
    wide, narrow = metrics.bootstrap(vals), metrics.bootstrap(vals * 20)
    assert narrow.hi - narrow.lo < wide.hi - wide.lo


def test_chrf_known_strings():
    assert metrics.chrf("the cat", "the cat") == 100.0
    assert metrics.chrf("the cat", "thecat") == 100.0  # whitespace is ignored
    assert metrics.chrf("xyz", "abc") == 0.0
    assert metrics.chrf("", "abc") == 0.0
    # "ab" vs "abc": unigrams P=2/2 R=2/3, bigrams P=1/1 R=1/2, higher orders absent in the
    # hypothesis; P=1, R=7/12, F2 = 5*P*R/(4P+R) = 7/11.
    assert metrics.chrf("ab", "abc") == pytest.approx(100 * 7 / 11)
    # recall counts beta=2 times: the longer of two partial matches scores higher
    assert metrics.chrf("abc", "ab") == pytest.approx(100 * 5 * (7 / 12) / (4 * (7 / 12) + 1))


def test_verbatim_copy_needs_eight_shared_words():
    index = metrics.ngram_index(
        ["So sorry! I've flagged your parcel with the courier and we'll call."]
    )
    assert metrics.copied_span(
        "Hi, I've flagged your parcel with the courier and we'll sort it", index
    ) == ("i've flagged your parcel with the courier and")
    # seven shared words in a row is not a copy
    assert metrics.copied_span("I've flagged your parcel with the courier today", index) is None


@pytest.mark.parametrize(
    "item, reply, ok",
    [
        ({"check": "number", "answer": 42}, "17 + 25 = 42.", True),
        ({"check": "number", "answer": 42}, "It is 43.", False),
        ({"check": "number", "answer": 3000}, "That is 3,000 grams.", True),
        ({"check": "number", "answer": 7.75}, "7.75", True),
        ({"check": "number", "answer": 1024}, "about 1020", False),
        ({"check": "number", "answer": 273.15, "tol": 0.002}, "273 K", True),
        ({"check": "contains", "answer": "Paris"}, "The capital is paris.", True),
        ({"check": "contains", "answer": "Paris"}, "Lyon", False),
        ({"check": "regex", "answer": r"^\W*YES\W*$"}, "YES", True),
        ({"check": "regex", "answer": r"^\W*YES\W*$"}, "Yes, of course", False),
    ],
)
def test_probe_checks(item, reply, ok):
    assert metrics.check_probe({"prompt": "q", **item}, reply) is ok


def test_shipped_probe_items_accept_a_right_answer_and_refuse_a_wrong_one():
    probe = ev.load_probe()
    # enough items that the paired forgetting drop's interval is about +-5 points
    assert len(probe) >= 350
    assert len({p["id"] for p in probe}) == len(probe)
    assert {p["skill"] for p in probe} >= {"arithmetic", "units", "capitals", "format"}
    for item in probe:
        right = item.get("example", str(item["answer"]))
        assert metrics.check_probe(item, right), item["id"]
        assert not metrics.check_probe(item, "I am not sure, sorry."), item["id"]
        # a model that only repeats the question must not pass
        assert not metrics.check_probe(item, item["prompt"]), item["id"]


def test_probe_subset_is_spread_over_skills_and_stable():
    probe = ev.load_probe()
    sub = ev.probe_subset(probe, 60)
    assert len(sub) == 60 and sub == ev.probe_subset(probe, 60)
    assert {p["skill"] for p in sub} == {p["skill"] for p in probe}
    assert ev.probe_subset(probe, None) == probe


def test_loss_gap_from_a_training_log(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(
        '{"step": 0, "epoch": 0, "eval_loss": 1.25}\n'  # the base, before training
        '{"step": 1, "train_loss": 2.0, "eval_loss": 1.5}\n'
        '{"step": 2, "train_loss": 1.0}\n'
        '{"step": 3, "train_loss": 0.5, "eval_loss": 1.75}\n'
        '{"step": 4, "train_lo'  # a killed trainer's partial line
    )
    gap = metrics.loss_gap(log)
    assert gap is not None
    assert (gap["train_loss"], gap["eval_loss"], gap["gap"], gap["best_eval_loss"]) == (
        0.5,
        1.75,
        1.25,
        1.5,
    )
    assert gap["base_eval_loss"] == 1.25
    log.write_text('{"step": 0, "eval_loss": 2.0}\n{"step": 1, "train_loss": 2.0}\n')
    assert metrics.loss_gap(log) is None


# -- a whole eval with fake backends ------------------------------------------------------

USERS = {
    "ex1": "ex1: where is my order GL-48213?",
    "ex2": "ex2: my fern arrived with broken leaves",
    "ex3": "ex3: how often should I water a snake plant?",
    "ex4": "ex4: can I change my delivery address?",
}
REFERENCE = {
    "ex1": "So sorry for the wait! I've checked GL-48213 and it leaves our greenhouse today.",
    "ex2": "Oh no, sorry about your fern! I'll send a free replacement today.",
    "ex3": "Great question! Water it every two to three weeks and let the soil dry out.",
    "ex4": "Happy to help! Just reply with the new address and I'll update it.",
}
TRAIN_REPLY = "Oh no! I'll send a free replacement plant today with tracking by email."
STUDENT = {
    "ex1": REFERENCE["ex1"],  # identical: chrF 100
    # copies 8+ words of a training reply
    "ex2": "Oh no, I'm sorry! I'll send a free replacement plant today with tracking.",
    "ex3": "Glad you asked! Water it every three weeks.",
    "ex4": "**Sure!** Just update it in your account page.",  # markdown: fails the style
}
BASE = {
    "ex1": "Your order is in transit.",  # no warm opening, no next step
    "ex2": "This is a known issue with ferns.",
    "ex3": "Thanks! You can water it every two weeks.",  # passes
    "ex4": "Addresses are stored in the account.",
}
PROBE = [
    {"id": "p1", "skill": "arithmetic", "prompt": "What is 2 + 2?", "answer": 4, "check": "number"},
    {
        "id": "p2",
        "skill": "capitals",
        "prompt": "Capital of France?",
        "answer": "Paris",
        "check": "contains",
    },
    {
        "id": "p3",
        "skill": "format",
        "prompt": "Say YES.",
        "answer": r"^\W*YES\W*$",
        "check": "regex",
    },
    {
        "id": "p4",
        "skill": "arithmetic",
        "prompt": "What is 9 * 8?",
        "answer": 72,
        "check": "number",
    },
]
PROBE_STUDENT = {
    "What is 2 + 2?": "4",
    "Capital of France?": "Paris.",
    "Say YES.": "Sure! YES",
    "What is 9 * 8?": "81",
}
PROBE_BASE = {
    "What is 2 + 2?": "2 + 2 = 4",
    "Capital of France?": "Paris",
    "Say YES.": "YES",
    "What is 9 * 8?": "72",
}


def answering(table: dict[str, str], probe: dict[str, str]):
    def answer(messages):
        last = messages[-1]["content"]
        if last in probe:
            return probe[last]
        return table[last.split(":")[0]]

    return answer


def judging(messages):
    """Hand-made verdicts: ex1 student better, ex2 tie, ex3 always 'A' (position bias), ex4
    base better."""
    prompt = messages[-1]["content"]
    a = re.search(r"<reply_a>\n(.*?)\n</reply_a>", prompt, re.S).group(1)
    ex = re.search(r"USER: (ex\d)", prompt).group(1)
    winner = {
        "ex1": "A" if a == STUDENT["ex1"] else "B",
        "ex2": "tie",
        "ex3": "A",
        "ex4": "A" if a == BASE["ex4"] else "B",
    }[ex]
    return json.dumps({"reason": f"verdict for {ex}", "winner": winner})


def fake_embed(texts):
    vec = {**{r: [1.0, 0.0] for r in REFERENCE.values()}, STUDENT["ex2"]: [1.0, 1.0]}
    return np.array([vec.get(t, [0.0, 1.0]) for t in texts])


@pytest.fixture
def eval_run(make_run, tmp_path):
    def example(ex):
        return {
            "messages": [
                {"role": "system", "content": "A long teacher prompt that eval must not send."},
                {"role": "user", "content": USERS[ex]},
                {"role": "assistant", "content": REFERENCE[ex]},
            ]
        }

    run = make_run(
        "evalrun",
        eval__jsonl=[example(e) for e in USERS]
        + [{"messages": [{"role": "user", "content": "hi"}]}],
        train__jsonl=[
            {
                "messages": [
                    {"role": "user", "content": "dead fern"},
                    {"role": "assistant", "content": TRAIN_REPLY},
                ]
            }
        ],
    )
    run.update_manifest(
        student={"model": "fake:student", "base": "fake:base"},
        config={"teacher": "fake:teacher"},
        inputs={"style": {"path": str(STYLE)}},
    )
    log = run.path / "train" / "fake-student" / "log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text(
        '{"step": 1, "train_loss": 2.0, "eval_loss": 1.5}\n'
        '{"step": 2, "train_loss": 0.5, "eval_loss": 1.75}\n'
    )
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps(p) + "\n" for p in PROBE))
    run.probe = probe
    return run


def fakes():
    return {
        "fake:student": FakeBackend(default=answering(STUDENT, PROBE_STUDENT), name="student"),
        "fake:base": FakeBackend(default=answering(BASE, PROBE_BASE), name="base"),
        "fake:judge": FakeBackend(default=judging, name="judge"),
    }


def test_every_metric_matches_the_hand_computed_value(eval_run):
    backends = fakes()
    report = ev.evaluate(
        eval_run,
        judge="fake:judge",
        backends=backends,
        embedder=fake_embed,
        probe_path=eval_run.probe,
    )
    m = report["metrics"]
    assert report["examples"] == 4 and report["paired"] == 4

    # style: student passes ex1-ex3 (ex4 uses markdown), base only ex3, references all
    assert m["style"]["student"]["mean"] == 0.75
    assert m["style"]["base"]["mean"] == 0.25
    assert m["style"]["reference"]["mean"] == 1.0
    assert m["style"]["diff"]["mean"] == 0.5
    assert m["style"]["diff"]["lo"] <= 0.5 <= m["style"]["diff"]["hi"]

    # chrF: ex1 is identical to its reference
    rows = list(read_jsonl(eval_run.path / "eval" / "fake-student" / "results.jsonl"))
    examples = [r for r in rows if r["kind"] == "example"]
    assert examples[0]["student"]["chrf"] == 100.0
    expected = [metrics.chrf(STUDENT[e], REFERENCE[e]) for e in USERS]
    assert m["chrf"]["student"]["mean"] == pytest.approx(sum(expected) / 4, abs=1e-3)
    assert m["chrf"]["base"]["mean"] < m["chrf"]["student"]["mean"]

    # similarity with the injected embedder: cosines 1, 1/sqrt(2), 0, 0 for the student
    assert m["similarity"]["student"]["mean"] == pytest.approx((1 + 1 / math.sqrt(2)) / 4, abs=1e-5)
    assert m["similarity"]["base"]["mean"] == 0.0

    # judge, both orders: ex1 1, ex2 0.5, ex3 (A both times) 0.5, ex4 0
    wr = m["win_rate"]
    assert wr["student"]["mean"] == 0.5
    assert wr["judgments"] == {"win": 3, "tie": 2, "loss": 3}
    assert wr["order_consistent"] == 0.75
    assert len(backends["fake:judge"].requests) == 8
    judge_prompt = backends["fake:judge"].requests[0][-1]["content"]
    assert REFERENCE["ex1"] in judge_prompt and "warm" in judge_prompt

    # copying: only the student's ex2 repeats 8+ words of a training reply
    assert m["copying"]["student"]["mean"] == 0.25
    assert m["copying"]["base"]["mean"] == 0.0
    assert m["copying"]["reference"]["mean"] == 0.0
    assert examples[1]["student"]["copied"] == "i'll send a free replacement plant today with"

    # loss gap from train/fake-student/log.jsonl
    assert (m["loss"]["train_loss"], m["loss"]["eval_loss"], m["loss"]["gap"]) == (0.5, 1.75, 1.25)

    # probe: student 2/4 (p3 wraps YES in words, p4 wrong), base 4/4, drop 0.5
    assert m["probe"]["student"]["mean"] == 0.5
    assert m["probe"]["base"]["mean"] == 1.0
    assert m["probe"]["drop"]["mean"] == 0.5
    assert m["probe"]["by_skill"]["arithmetic"] == {"student": 0.5, "base": 1.0}

    # the verdict says it in one line
    assert report["verdict"].startswith("student passes style 75% vs base 25% (+50 pts, CI ")
    assert "judge prefers student 50%" in report["verdict"]
    assert "eval loss rose after its best epoch" in report["verdict"]
    assert (
        "probe 50% vs base 100% (drop +50 pts, CI +0..+100, not conclusive: too few probe items)"
        in report["verdict"]
    )

    # both models saw the short system prompt only, and the same context
    sent = backends["fake:student"].requests[0]
    assert sent[0] == {"role": "system", "content": SYSTEM}
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent in backends["fake:base"].requests

    # files: every prompt and reply, the report, the stage record, the dropped example
    assert len(examples) == 4 and len([r for r in rows if r["kind"] == "probe"]) == 4
    assert examples[3]["student"]["text"] == STUDENT["ex4"]
    assert examples[3]["student"]["style_problems"][0].startswith("no-markdown")
    saved = json.loads((eval_run.path / "eval" / "fake-student" / "report.json").read_text())
    assert saved["metrics"] == m
    assert (eval_run.path / "eval" / "fake-student" / "report.html").exists()
    stage = eval_run.stage("eval")
    assert stage["status"] == "done" and stage["examples"] == 4
    rejected = list(read_jsonl(eval_run.file("rejected.jsonl")))
    assert [(r["stage"], r["reason"]) for r in rejected] == [
        ("eval", "no assistant reply to hold out")
    ]


def test_rerun_sends_nothing_again(eval_run):
    first = ev.evaluate(
        eval_run, judge="fake:judge", backends=fakes(), embedder=None, probe_path=eval_run.probe
    )
    silent = {k: FakeBackend(name=k.split(":")[1]) for k in fakes()}  # any call would fail
    again = ev.evaluate(
        eval_run, judge="fake:judge", backends=silent, embedder=None, probe_path=eval_run.probe
    )
    assert all(not b.requests for b in silent.values())
    assert again["metrics"] == first["metrics"]
    assert again["metrics"]["similarity"] == {"skipped": "similarity skipped: turned off"}
    # the dropped example is recorded once, not once per run
    assert len(list(read_jsonl(eval_run.file("rejected.jsonl")))) == 1


def test_no_judge_when_the_teacher_is_local(eval_run):
    report = ev.evaluate(eval_run, backends=fakes(), embedder=None, probe_path=eval_run.probe)
    assert report["judge"] is None
    assert "pass --judge MODEL" in report["metrics"]["win_rate"]["skipped"]
    eval_run.update_manifest(
        config={"teacher": "openai:gpt-4o", "generate": {"base_url": "http://127.0.0.1:9/v1"}}
    )
    plan = ev.plan_models(eval_run)
    assert (plan.judge, plan.judge_base_url) == ("openai:gpt-4o", "http://127.0.0.1:9/v1")
    assert ev.plan_models(eval_run, judge="openai:gpt-4o-mini").judge_base_url is None


def test_a_failing_or_absent_judge_skips_only_the_win_rate(eval_run):
    from distill.errors import BackendError

    backends = fakes()
    backends["fake:judge"] = FakeBackend(
        default=lambda m: (_ for _ in ()).throw(BackendError("judge server down"))
    )
    report = ev.evaluate(
        eval_run, judge="fake:judge", backends=backends, embedder=None, probe_path=eval_run.probe
    )
    assert report["metrics"]["win_rate"] == {
        "skipped": "win rate skipped: every judge call failed; the first error: judge server down"
    }
    assert report["errors"]["judge"] == 8
    assert report["metrics"]["style"]["student"]["mean"] == 0.75

    def no_key(spec):
        raise BackendError("OPENAI_API_KEY is not set")

    eval_run.update_manifest(config={"teacher": "openai:gpt-4o"})
    report = ev.evaluate(
        eval_run, backends=fakes(), factory=no_key, embedder=None, probe_path=eval_run.probe
    )
    assert report["metrics"]["win_rate"]["skipped"] == (
        "win rate skipped: the judge openai:gpt-4o is unavailable: OPENAI_API_KEY is not set"
    )
    report = ev.evaluate(
        eval_run, judge="none", backends=fakes(), embedder=None, probe_path=eval_run.probe
    )
    assert report["metrics"]["win_rate"]["skipped"] == (
        "win rate skipped: turned off with --judge none"
    )


def test_failed_calls_are_reported_not_scored(eval_run):
    backends = fakes()
    answer = answering(STUDENT, PROBE_STUDENT)

    def flaky(messages):
        if messages[-1]["content"] == USERS["ex1"]:
            from distill.errors import BackendError

            raise BackendError("server said 500")
        return answer(messages)

    backends["fake:student"] = FakeBackend(default=flaky, name="student")
    report = ev.evaluate(eval_run, backends=backends, embedder=None, probe_path=eval_run.probe)
    assert report["errors"]["student"] == 1
    assert report["paired"] == 3
    assert report["metrics"]["style"]["student"]["n"] == 3


def test_every_call_failing_is_one_error(eval_run):
    backends = fakes()
    from distill.errors import BackendError, DistillError

    backends["fake:base"] = FakeBackend(
        default=lambda m: (_ for _ in ()).throw(BackendError("no key"))
    )
    with pytest.raises(DistillError, match="every base call failed; the first error: no key"):
        ev.evaluate(eval_run, backends=backends, embedder=None, probe_path=eval_run.probe)


def test_student_slug_names_the_training_folder(make_run):
    run = make_run("slug")
    adapter = run.path / "train" / "local-smollm2-135m" / "adapter"
    assert ev.student_slug(run, f"local:{adapter}") == "local-smollm2-135m"
    assert ev.student_slug(run, "openai:ft:gpt-4o-mini-2024-07-18:org::abc") == (
        "openai-ft-gpt-4o-mini-2024-07-18-org-abc"
    )
    assert ev.student_slug(run, "ollama:llama3.1:8b") == "ollama-llama3.1-8b"


# -- the report is safe to open -----------------------------------------------------------

NASTY = '<script>alert("x")</script><img src=x onerror=alert(1)><b>bold</b> & "quotes"'


def test_model_text_is_shown_as_text_in_the_report(eval_run):
    backends = fakes()
    student_answer = answering(STUDENT, PROBE_STUDENT)
    backends["fake:student"] = FakeBackend(
        default=lambda m: NASTY if "ex4" in m[-1]["content"] else student_answer(m), name="s"
    )
    atomic_write_jsonl(
        eval_run.file("eval.jsonl"),
        list(read_jsonl(eval_run.file("eval.jsonl")))[:4]
        + [
            {
                "messages": [
                    {"role": "user", "content": "ex1: </pre><script>steal()</script>"},
                    {"role": "assistant", "content": "Sorry! <i>I'll</i> check."},
                ]
            }
        ],
    )
    report = ev.evaluate(
        eval_run, judge="fake:judge", backends=backends, embedder=None, probe_path=eval_run.probe
    )
    html = (eval_run.path / "eval" / "fake-student" / "report.html").read_text()
    assert "<script" not in html.lower()
    assert "<img" not in html and "<i>I'll" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;/pre&gt;&lt;script&gt;steal()&lt;/script&gt;" in html
    assert "&lt;i&gt;I&#x27;ll&lt;/i&gt;" in html
    # self-contained: no external resources
    assert not re.search(r"<[^>]*\s(src|href)\s*=", html)
    assert "default-src 'none'" in html
    assert html.count("<svg") >= 5
    assert report["examples"] == 5


# -- the command --------------------------------------------------------------------------


def test_cli_prints_the_summary_and_verdict(eval_run, monkeypatch):
    made = fakes()
    monkeypatch.setattr(ev, "_default_factory", lambda base_url: made.__getitem__)
    monkeypatch.setattr(ev, "load_embedder", lambda: (None, "not in this test"))
    monkeypatch.setattr(ev, "load_probe", lambda path=None: PROBE)
    r = CliRunner().invoke(
        cli,
        ["eval", "--run", str(eval_run.path), "--judge", "fake:judge", "--limit", "2"],
        env={"COLUMNS": "200"},
    )
    assert r.exit_code == 0, r.output
    assert "style pass rate" in r.output
    assert "student passes style 100% vs base 0%" in r.output
    assert "similarity skipped: not in this test" in r.output
    assert "report.html" in r.output
    assert eval_run.stage("eval")["examples"] == 2
    # 2 held-out examples cannot show a result: a warning first, then a headline that says so
    out = " ".join(r.output.split())
    assert "warning: 2 held-out example(s): too few to conclude" in out
    assert "Cannot tell whether distillation worked: 2 held-out examples: too few" in out
    assert "--eval-size 30" in out
    assert eval_run.stage("eval")["outcome"] == "cannot-tell"


def test_cli_missing_inputs_say_which_command_to_run(make_run):
    run = make_run("empty")
    r = CliRunner().invoke(cli, ["eval", "--run", str(run.path)])
    assert r.exit_code == 1
    assert "eval.jsonl: missing; run `distill split` first" in r.output
    assert len(r.output.strip().splitlines()) == 1
    atomic_write_jsonl(run.file("eval.jsonl"), [{"messages": []}])
    r = CliRunner().invoke(cli, ["eval", "--run", str(run.path)])
    assert r.exit_code == 1
    assert "no trained student in this run; run `distill train` first" in r.output
    r = CliRunner().invoke(cli, ["eval", "--run", str(run.path), "--student", "fake:x"])
    assert r.exit_code == 2 and "pass --base MODEL" in r.output
    r = CliRunner().invoke(cli, ["eval", "--run", str(run.path), "--limit", "0"])
    assert r.exit_code == 2 and "--limit must be at least 1, not 0" in r.output


# -- the report in a real browser ---------------------------------------------------------


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _chromium() is None, reason="chromium is not installed (Debian: apt-get install chromium)"
)
def test_report_renders_with_charts_in_headless_chromium(eval_run, tmp_path):
    import subprocess

    Image = pytest.importorskip("PIL.Image", reason="Pillow reads the screenshot")
    ev.evaluate(
        eval_run,
        judge="fake:judge",
        backends=fakes(),
        embedder=fake_embed,
        probe_path=eval_run.probe,
    )
    page = eval_run.path / "eval" / "fake-student" / "report.html"
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,1000",
            f"--screenshot={shot}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 1000)

    pixels = np.asarray(img).astype(int)

    def count(rgb, box):
        x0, y0, x1, y1 = box
        return int((np.abs(pixels[y0:y1, x0:x1] - np.array(rgb)) <= 6).all(axis=-1).sum())

    charts = (0, 200, 1280, 800)  # below the title and verdict
    top = (0, 0, 1280, 200)
    # student bars (green), base bars (grey), reference bars (amber) and the judge's
    # base-better segment (red) are drawn as solid areas, not just present in the markup
    assert count((0x2F, 0x7D, 0x4F), charts) > 5000
    assert count((0x8A, 0x8F, 0x98), charts) > 1000
    assert count((0xC9, 0x8A, 0x2B), charts) > 2000
    assert count((0xB5, 0x48, 0x3B), charts) > 1000
    # the page is not blank above the charts either: the verdict box is drawn
    assert count((0xEE, 0xF6, 0xF0), top) > 10000


def test_verdict_reads_a_narrow_probe_interval_around_zero_as_no_forgetting():
    from distill.evaluation.verdict import verdict_line

    def report(lo: float, hi: float) -> dict:
        drop = {"mean": 0.013, "lo": lo, "hi": hi}
        probe = {"student": {"mean": 0.23}, "base": {"mean": 0.24}, "drop": drop}
        skipped = {"skipped": "not in this test"}
        metrics = {"probe": probe, "style": skipped, "win_rate": skipped, "copying": skipped}
        return {"metrics": {**metrics, "loss": skipped}}

    assert "no forgetting detected (probe 23% vs base 24%, drop +1 pts" in verdict_line(
        report(-0.026, 0.054)
    )
    assert "not conclusive" in verdict_line(report(-0.10, 0.15))


def test_style_by_plan_axis_shows_where_the_student_is_weak(eval_run, monkeypatch):
    """eval_ids.jsonl (written by split beside eval.jsonl) carries each example's plan point:
    eval reports the style pass rate per topic, weakest student rate first."""
    topics = ["orders", "orders", "plant care", "plant care", "orders"]
    atomic_write_jsonl(
        eval_run.file("eval_ids.jsonl"),
        [{"id": f"id-{i}", "meta": {"topic": t, "turns": 1}} for i, t in enumerate(topics)],
    )
    report = ev.evaluate(
        eval_run, judge="none", backends=fakes(), embedder=None, probe_path=eval_run.probe
    )
    by_topic = report["metrics"]["style_by_axis"]["topic"]
    # student: ex1, ex2 (orders) pass; ex3 passes, ex4 (markdown) fails; base passes ex3 only
    assert [(r["value"], r["n"]) for r in by_topic] == [("plant care", 2), ("orders", 2)]
    assert by_topic[0]["student"]["mean"] == 0.5 and by_topic[0]["base"]["mean"] == 0.5
    assert by_topic[1]["student"]["mean"] == 1.0 and by_topic[1]["base"]["mean"] == 0.0
    assert "turns" not in report["metrics"]["style_by_axis"]  # one value: nothing to compare
    rows = list(read_jsonl(eval_run.path / "eval" / "fake-student" / "results.jsonl"))
    assert [r["id"] for r in rows if r["kind"] == "example"] == ["id-0", "id-1", "id-2", "id-3"]
    html = (eval_run.path / "eval" / "fake-student" / "report.html").read_text()
    assert "Where the student is weak" in html and "plant care" in html
    assert 'aria-label="style pass rate by topic"' in html  # the chart, one bar pair a topic
    assert "win_rate_by_axis" not in report["metrics"]  # no judge, no win rate by topic

    judged = ev.evaluate(
        eval_run, judge="fake:judge", backends=fakes(), embedder=None, probe_path=eval_run.probe
    )
    win = {r["value"]: r for r in judged["metrics"]["win_rate_by_axis"]["topic"]}
    rows = [r for r in read_jsonl(eval_run.path / "eval" / "fake-student" / "results.jsonl")]
    for topic, row in win.items():  # the judge's points per topic, from the rows themselves
        points = [
            r["student_points"]
            for r in rows
            if r["kind"] == "example" and r["meta"].get("topic") == topic
        ]
        assert row["n"] == len(points) and row["student"]["mean"] == sum(points) / len(points)
    html = (eval_run.path / "eval" / "fake-student" / "report.html").read_text()
    assert "judge prefers student" in html.split("Where the student is weak")[1]

    monkeypatch.setattr(ev, "_default_factory", lambda base_url: fakes().__getitem__)
    monkeypatch.setattr(ev, "load_embedder", lambda: (None, "not in this test"))
    monkeypatch.setattr(ev, "load_probe", lambda path=None: PROBE)
    r = CliRunner().invoke(cli, ["eval", "--run", str(eval_run.path), "--judge", "none"])
    assert r.exit_code == 0, r.output
    assert "weakest topics (style pass rate): plant care 50%" in " ".join(r.output.split())
