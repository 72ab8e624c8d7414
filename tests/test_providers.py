"""anthropic:MODEL and google:MODEL through instructor, against a loopback server speaking
Anthropic's Messages API and Gemini's generateContent (fake_provider_server.py): the whole
`distill generate` from the CLI (a 429 storm, garbage answers, SIGKILL and resume),
`distill eval --judge anthropic:...`, keys, missing SDKs, and instructor actually in use."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import sys
import time
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SEEDS, STYLE, greenleaf_example, sigkill_midway
from fake_openai_server import request_schema
from fake_provider_server import FakeProviderServer, convo_key
from pydantic import BaseModel, Field

from distill.backends import get_backend
from distill.cli import cli
from distill.errors import BackendError, MissingExtra

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-provider-secret-do-not-write"
MODELS = {"anthropic": "anthropic:claude-sonnet-4-5", "google": "google:gemini-2.5-flash"}
KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "google": "GEMINI_API_KEY"}
PROVIDER_ENV = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
)


@pytest.fixture(autouse=True)
def _no_provider_env(monkeypatch):
    for key in PROVIDER_ENV:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def seeds_file(tmp_path) -> Path:
    path = tmp_path / "shop.jsonl"
    path.write_text(SEEDS.read_text())
    (tmp_path / "shop.style.toml").write_text(STYLE.read_text())
    return path


REPLIES = [
    "Happy to help with your {topic} question! I've sorted it; expect an email within the hour.",
    "Thanks for waiting! Just reply here with a photo and we'll take it from there today.",
    "Of course! You can change it under My account, and I've added a note for the team.",
]


def _prompt(body) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def chat_responder(body) -> str:
    """A valid GreenLeaf chat for the point a generate prompt asks for (the turns read from
    the prompt: Gemini's function schema keeps no item counts); other schemas get a verdict."""
    schema = request_schema(body)
    if schema is None:
        return "Sorry to hear that! I've sorted it and it ships today."
    if "exchanges" not in schema.get("properties", {}):
        return json.dumps({"reason": "A reads better", "winner": "A"})
    prompt = _prompt(body)
    turns = int(re.search(r"Exactly (\d+) exchange", prompt).group(1))
    topic = re.search(r"- Topic: (.*)", prompt).group(1).strip()
    tag = hashlib.sha256(prompt.encode()).hexdigest()[:6]
    return json.dumps(
        {
            "exchanges": [
                {
                    "user": f"Hi, a question about {topic} ({tag}-{i})",
                    "assistant": REPLIES[i].format(topic=topic) + f" Ref {tag}.",
                }
                for i in range(turns)
            ]
        }
    )


TOPICS = tomllib.loads(STYLE.read_text())["axes"]["topics"]


def garbage_for(prompt: str) -> str | None:
    """A fixed bad answer for half the topics: text with no tool call, or an object with no
    exchanges; the same prompt always gets the same garbage, re-asks included."""
    topic = re.search(r"- Topic: (.*)", prompt).group(1).strip()
    kind = TOPICS.index(topic) % 4
    if kind == 0:
        return "I'm sorry, I can't write that conversation."
    if kind == 1:
        return json.dumps({"exchanges": []})
    return None


def garbage_responder(body) -> str:
    if request_schema(body) is not None:
        bad = garbage_for(_prompt(body))
        if bad is not None:
            return bad
    return chat_responder(body)


def generate_args(seeds_file: Path, provider: str, server: FakeProviderServer, n: int) -> list:
    return [
        "generate",
        "--seeds",
        str(seeds_file),
        "--n",
        str(n),
        "--teacher",
        MODELS[provider],
        "--base-url",
        server.root,
        "--concurrency",
        "4",
    ]


def calls_rows(db: Path) -> list[dict]:
    con = sqlite3.connect(db)
    rows = [
        {"request": json.loads(r[0]), "error": r[1], "cost": r[2], "model": r[3]}
        for r in con.execute("SELECT request, error, cost_usd, model FROM calls")
    ]
    con.close()
    return rows


def assert_no_secret(out: Path, *texts: str) -> None:
    for f in out.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    for t in texts:
        assert SECRET not in t


# -- distill generate from the CLI ----------------------------------------------------------
@pytest.mark.parametrize("provider", ["anthropic", "google"])
def test_generate_through_instructor_survives_a_429_storm(seeds_file, tmp_path, provider):
    storm = ["429"] * 6 + ["500"]  # the first requests, then one in five is a 429
    with FakeProviderServer(
        chat_responder, script=storm, faults={"429": 0.2}, seed=7, retry_after=0.05
    ) as server:
        res = CliRunner().invoke(
            cli, generate_args(seeds_file, provider, server, 8), env={KEY_ENV[provider]: SECRET}
        )
    assert res.exit_code == 0, res.output
    assert "8 of 8 accepted" in res.output
    assert server.counts["429"] > 6 and server.counts["500"] == 1
    wire = server.bodies[-1]
    if provider == "anthropic":  # instructor's TOOLS mode: a forced tool call
        assert wire["tool_choice"]["type"] == "tool" and wire["tools"][0]["input_schema"]
        assert wire["system"][0]["text"] and wire["messages"][0]["role"] == "user"
    else:
        assert wire["toolConfig"]["functionCallingConfig"]["mode"] == "ANY"
        assert wire["systemInstruction"]["parts"][0]["text"] and wire["contents"][0]["parts"]
    out = tmp_path / "outputs" / "shop"
    manifest = json.loads((out / "manifest.json").read_text())
    faults_seen = manifest["stages"]["generate"]["transient_faults"]
    assert faults_seen["429"] == server.counts["429"]
    rows = calls_rows(out / "calls.sqlite")
    assert {r["model"] for r in rows} == {MODELS[provider]}
    assert all(r["cost"] > 0 for r in rows)  # priced from models.toml
    spent = float(re.search(r"\$(\d+\.\d+)", res.output).group(1))
    assert spent == pytest.approx(sum(r["cost"] for r in rows), abs=1e-4) and spent > 0
    assert_no_secret(tmp_path / "outputs", res.output)


@pytest.mark.parametrize("provider", ["anthropic", "google"])
def test_retry_after_is_honoured(provider):
    class Order(BaseModel):
        """An order status."""

        order: str = Field(pattern=r"^GL-\d+$")

    with FakeProviderServer(
        lambda body: json.dumps({"order": "GL-1"}), script=["429"], retry_after=0.8
    ) as server:
        b = get_backend(MODELS[provider], base_url=server.root, api_key="k", backoff_base=0.001)

        async def main():
            try:
                return await b.chat([{"role": "user", "content": "hi"}], response_model=Order)
            finally:
                await b.aclose()

        t0 = time.perf_counter()
        r = asyncio.run(main())
        assert time.perf_counter() - t0 >= 0.8
    assert r.value == Order(order="GL-1") and server.counts["requests"] == 2
    assert b.faults == {"429": 1}


@pytest.mark.parametrize("provider", ["anthropic", "google"])
def test_garbage_is_reasked_with_the_reason_then_rejected(seeds_file, tmp_path, provider):
    with FakeProviderServer(garbage_responder) as server:
        res = CliRunner().invoke(
            cli, generate_args(seeds_file, provider, server, 6), env={KEY_ENV[provider]: SECRET}
        )
    assert res.exit_code == 0, res.output
    assert "6 of 6 accepted" in res.output
    out = tmp_path / "outputs" / "shop"
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    reasons = " | ".join(r["reason"] for r in rejected)
    assert "tool call in the reply" in reasons  # text instead of the tool call
    assert "exchanges" in reasons  # an object with too few exchanges
    assert all(r["reason"].startswith("invalid after 3 attempt(s)") for r in rejected)
    assert "Top rejection reasons:" in res.output
    by_prompt: dict[str, list] = {}
    for shaped in server.shaped:
        by_prompt.setdefault(_prompt(shaped), []).append(shaped["messages"])
    bad = {p: convos for p, convos in by_prompt.items() if garbage_for(p) is not None}
    # every rejected prompt was re-asked (its second re-ask, the same request again, may come
    # from calls.sqlite), each re-ask carrying the garbage and the reason it was rejected
    assert all(len(convos) <= 3 for convos in bad.values())
    assert sum(len(convos) >= 2 for convos in bad.values()) >= len(rejected)
    for prompt, convos in bad.items():
        for convo in convos[1:]:  # a re-ask: the garbage, then the reason it was rejected
            said, reason = convo[-2]["content"], convo[-1]["content"]
            assert said == garbage_for(prompt)
            assert ("tool call" if said.startswith("I'm sorry") else "exchanges") in reason


@pytest.mark.parametrize("provider", ["anthropic", "google"])
def test_kill_and_resume_resends_no_finished_call(seeds_file, tmp_path, provider):
    """SIGKILL `distill generate` midway; the rerun finishes n and the server never answered
    twice a call that calls.sqlite had recorded before the kill."""
    import os
    import subprocess

    n = 30
    out = tmp_path / "outputs"
    env = {**os.environ, KEY_ENV[provider]: SECRET, "DISTILL_OUTPUTS": str(out)}
    with FakeProviderServer(
        chat_responder, latency=0.05, faults={"429": 0.05}, retry_after=0.01
    ) as server:
        cmd = [sys.executable, "-m", "distill", *generate_args(seeds_file, provider, server, n)]
        gen = out / "shop" / "generated.jsonl"
        done_before = sigkill_midway(cmd, env, tmp_path, gen, 8, timeout=90)
        assert 8 <= done_before < n, "the kill should land midway"
        finished = [
            convo_key(r["request"]["messages"]) for r in calls_rows(out / "shop" / "calls.sqlite")
        ]
        res = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr
    assert f"{n} of {n} accepted" in res.stdout
    assert finished
    for key in finished:
        assert server.finished_convos[key] == 1
    rows = calls_rows(out / "shop" / "calls.sqlite")
    in_flight = server.counts["ok"] - len(rows)
    assert 0 <= in_flight <= 4  # at most the calls in flight at the kill were sent again
    assert_no_secret(out, res.stdout, res.stderr)


# -- distill eval with an Anthropic judge ---------------------------------------------------
@pytest.fixture
def served_run(make_run):
    run = make_run(
        "served",
        eval__jsonl=[
            greenleaf_example("My order is late.", "So sorry for the wait! I've flagged it."),
            greenleaf_example("Where is my plant?", "Sorry! I'll check the tracking now."),
        ],
    )
    run.update_manifest(
        student={"model": "ollama:greenleaf", "base": "ollama:smollm2:135m"},
        config={"teacher": "anthropic:claude-sonnet-4-5"},
        inputs={"style": {"path": str(STYLE)}},
    )
    return run


def test_eval_judge_through_anthropic(served_run, monkeypatch):
    from distill.stages import evaluate as ev

    monkeypatch.setattr(ev, "load_embedder", lambda: (None, "not in this test"))
    monkeypatch.setattr(
        ev,
        "load_probe",
        lambda path=None: [{"id": "p", "prompt": "Capital of France?", "answer": "Paris"}],
    )
    with FakeProviderServer(chat_responder) as server:
        monkeypatch.setenv("OLLAMA_HOST", server.root)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.root)
        monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
        args = ["eval", "--run", str(served_run.path), "--judge", "anthropic:claude-haiku-4-5"]
        r = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        judged = [b for b in server.bodies if "tool_choice" in b]
        sent = server.counts["requests"]
        r2 = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
        assert r2.exit_code == 0, r2.output
        assert server.counts["requests"] == sent  # the rerun came from calls.sqlite
    assert len(judged) == 2 * 2  # two held-out chats, judged in both orders
    assert {b["model"] for b in judged} == {"claude-haiku-4-5"}
    report = json.loads((served_run.path / "eval" / "ollama-greenleaf" / "report.json").read_text())
    assert report["metrics"]["win_rate"]["student"]["mean"] == 0.5  # the judge always says A
    assert_no_secret(served_run.path, r.output)


# -- keys, SDKs, and instructor in use ------------------------------------------------------
@pytest.mark.parametrize(
    "provider, line",
    [
        ("anthropic", "ANTHROPIC_API_KEY is not set; export ANTHROPIC_API_KEY="),
        ("google", "GOOGLE_API_KEY or GEMINI_API_KEY is not set; export GOOGLE_API_KEY="),
    ],
)
def test_a_missing_key_is_one_line(seeds_file, provider, line):
    res = CliRunner().invoke(
        cli, ["generate", "--seeds", str(seeds_file), "--teacher", MODELS[provider]]
    )
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].startswith(f"Error: {line}") or line in res.output
    assert "Traceback" not in res.output


def test_the_key_comes_from_the_environment_and_is_never_shown(monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", SECRET)
    b = get_backend("google:gemini-2.5-pro")
    assert SECRET not in repr(b) and b.price is not None and b.price.input_per_1m > 0
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    assert SECRET not in repr(get_backend("anthropic:claude-opus-4-5-20251101"))


@pytest.mark.parametrize(
    "provider, module", [("anthropic", "anthropic"), ("google", "google.genai")]
)
def test_a_missing_sdk_names_the_install_command(monkeypatch, provider, module):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtra, match=rf"pip install 'distill\[{provider}\]'"):
        get_backend(MODELS[provider], api_key="k")


def test_an_unreachable_server_is_one_line():
    b = get_backend(
        MODELS["anthropic"],
        base_url="http://127.0.0.1:9",
        api_key="k",
        max_http_retries=1,
        backoff_base=0.01,
    )

    async def main():
        try:
            await b.chat([{"role": "user", "content": "hi"}])
        finally:
            await b.aclose()

    with pytest.raises(BackendError, match=r"^cannot reach http://127.0.0.1:9"):
        asyncio.run(main())


def test_instructor_is_a_dependency_only_because_distill_imports_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [re.split(r"[=<>\[ ;]", d)[0].lower() for d in project["dependencies"]]
    source = "\n".join(p.read_text() for p in (ROOT / "distill").rglob("*.py"))
    imported = re.search(r"^\s*(import instructor|from instructor[. ])", source, re.M)
    if "instructor" in deps:
        assert imported, "instructor is a dependency that distill never imports: drop it"
    extras = project["optional-dependencies"]
    for extra in ("anthropic", "google"):  # each provider SDK is an extra, and dev has it
        for pin in extras[extra]:
            assert pin in extras["dev"], pin


@pytest.mark.parametrize("teacher", MODELS.values())
def test_after_a_claude_or_gemini_teacher_the_student_is_the_local_model(teacher):
    from distill.stages.pipeline import pick_student

    student, why = pick_student(teacher)
    assert student == "local:smollm2-135m" and "only OpenAI's" in why


def _serve(handler):
    """A FakeProviderServer whose Messages and generateContent routes are `handler`."""
    from aiohttp import web

    server = FakeProviderServer()

    def app():
        a = web.Application()
        a.router.add_post("/v1/messages", handler)
        a.router.add_post("/{version}/models/{model}:generateContent", handler)
        return a

    server.app = app  # type: ignore[method-assign]
    return server


def _chat_once(provider, url, **kw):
    b = get_backend(MODELS[provider], base_url=url, api_key=SECRET)

    async def main():
        try:
            return await b.chat([{"role": "user", "content": "hi"}], **kw)
        finally:
            await b.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize(
    "provider, status, hint",
    [("anthropic", 401, "check ANTHROPIC_API_KEY"), ("google", 403, "check GOOGLE_API_KEY")],
)
def test_a_rejected_key_is_one_line_naming_the_variable(provider, status, hint):
    from aiohttp import web

    async def refuse(request):
        body = {"error": {"code": status, "message": "invalid x-api-key", "status": "DENIED"}}
        if provider == "anthropic":
            body = {"type": "error", "error": {"type": "auth", "message": "invalid x-api-key"}}
        return web.json_response(body, status=status)

    with _serve(refuse) as server, pytest.raises(BackendError) as e:
        _chat_once(provider, server.root)
    line = str(e.value)
    assert "\n" not in line and hint in line and "invalid x-api-key" in line
    assert SECRET not in line


def test_an_answer_cut_at_the_token_limit_says_so():
    from aiohttp import web

    async def cut(request):
        body = await request.json()
        return web.json_response(
            {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [
                    {"type": "tool_use", "id": "t", "name": "Verdict", "input": {"reason": "A"}}
                ],
                "stop_reason": "max_tokens",
                "usage": {"input_tokens": 5, "output_tokens": 16},
            }
        )

    class Verdict(BaseModel):
        reason: str
        winner: str

    from distill.backends import InvalidOutput

    with _serve(cut) as server, pytest.raises(InvalidOutput) as e:
        _chat_once("anthropic", server.root, response_model=Verdict, max_tokens=16, max_retries=0)
    assert "cut at 16 tokens" in str(e.value) and e.value.usage.completion_tokens == 16
