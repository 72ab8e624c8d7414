"""The HTTP backends against loopback servers: OpenAI-compatible (with injected faults) and
Ollama's /api/chat; model strings, keys and error lines."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fake_openai_server import FakeOpenAIServer, request_schema
from pydantic import BaseModel, Field

from distill.backends import InvalidOutput, get_backend
from distill.backends.openai_backend import OpenAIBackend
from distill.errors import BackendError, UsageError


class Order(BaseModel):
    """An order status."""

    order: str = Field(pattern=r"^GL-\d+$")
    late: bool


def order_responder(body):
    last = body["messages"][-1]["content"]
    n = int(last.split("#")[-1]) if "#" in last else 0
    return json.dumps({"order": f"GL-{n}", "late": n % 2 == 0})


def ask(i: int) -> list[dict]:
    return [{"role": "user", "content": f"status of order #{i}"}]


def run_all(backend, coros):
    async def main():
        try:
            return await asyncio.gather(*coros, return_exceptions=True)
        finally:
            await backend.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("mode", ["tools", "json_schema", "json"])
def test_every_mode_returns_the_typed_object(mode):
    with FakeOpenAIServer(order_responder) as server:
        b = OpenAIBackend("gpt-4o-mini", base_url=server.url, api_key="k", mode=mode)
        [r] = run_all(b, [b.chat(ask(7), response_model=Order)])
        assert r.value == Order(order="GL-7", late=False)
        assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
        body = server.bodies[0]
        if mode == "tools":
            assert body["tool_choice"]["function"]["name"] == "Order"
        elif mode == "json_schema":
            assert body["response_format"]["json_schema"]["schema"]["title"] == "Order"
        else:
            assert body["response_format"] == {"type": "json_object"}
        assert request_schema(body)["properties"]["order"]["pattern"] == r"^GL-\d+$"


def test_mode_defaults_to_tools_on_openai_and_json_schema_elsewhere(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert get_backend("gpt-4o-mini").mode.value == "tools"
    assert get_backend("openai:llama", base_url="http://127.0.0.1:1/v1").mode.value == "json_schema"


def test_injected_faults_lose_nothing_and_duplicate_nothing():
    faults = {"429": 0.1, "500": 0.1, "malformed": 0.08, "slow": 0.05, "hang": 0.04}
    with FakeOpenAIServer(
        order_responder, faults=faults, seed=3, retry_after=0.05, slow_s=0.2, hang_s=3
    ) as server:
        b = OpenAIBackend(
            "gpt-4o-mini", base_url=server.url, api_key="k", timeout=1.0, backoff_base=0.01
        )
        t0 = time.perf_counter()
        results = run_all(b, [b.chat(ask(i), response_model=Order) for i in range(120)])
        elapsed = time.perf_counter() - t0
    assert [r.value.order for r in results] == [f"GL-{i}" for i in range(120)]  # nothing lost
    assert server.counts["ok"] == 120 and max(server.finished.values()) == 1  # no duplicates
    for kind in ("429", "500", "malformed", "slow", "hang"):
        assert server.counts[kind] > 0, kind  # every fault was injected ...
    # ... and every one the client saw is accounted for (a slow answer is not a fault to it)
    assert b.faults.get("429", 0) == server.counts["429"]
    assert b.faults.get("500", 0) == server.counts["500"]
    assert b.faults.get("malformed", 0) == server.counts["malformed"]
    assert b.faults.get("timeout", 0) == server.counts["hang"]
    total = sum(server.counts[k] for k in ("ok", "429", "500", "malformed", "hang"))
    assert server.counts["requests"] == total
    assert elapsed < 30


def test_retry_after_is_honoured():
    with FakeOpenAIServer(order_responder, script=["429"], retry_after=0.6) as server:
        b = OpenAIBackend("gpt-4o-mini", base_url=server.url, api_key="k", backoff_base=0.001)
        t0 = time.perf_counter()
        [r] = run_all(b, [b.chat(ask(2), response_model=Order)])
        assert time.perf_counter() - t0 >= 0.6
        assert r.value.order == "GL-2" and server.counts["requests"] == 2


def test_invalid_output_is_reasked_then_reported():
    answers = iter(['{"order": "48213", "late": true}', '{"order": "GL-48213", "late": true}'])
    with FakeOpenAIServer(lambda body: next(answers, "not json")) as server:
        b = OpenAIBackend("gpt-4o-mini", base_url=server.url, api_key="k")
        [r] = run_all(b, [b.chat(ask(1), response_model=Order, max_retries=1)])
        assert r.value.order == "GL-48213" and r.usage.attempts == 2
        reask = server.bodies[1]["messages"]
        assert reask[-2] == {"role": "assistant", "content": '{"order": "48213", "late": true}'}
        assert "order" in reask[-1]["content"] and "pattern" in reask[-1]["content"]
        b2 = OpenAIBackend("gpt-4o-mini", base_url=server.url, api_key="k")
        [e] = run_all(b2, [b2.chat(ask(1), response_model=Order, max_retries=0)])
        assert isinstance(e, InvalidOutput) and e.raw == "not json"


def test_free_text_and_rate_limit():
    with FakeOpenAIServer() as server:
        b = OpenAIBackend("m", base_url=server.url, api_key="k", rpm=600)  # 10/s, 1 s burst
        t0 = time.perf_counter()
        res = run_all(b, [b.chat(ask(i)) for i in range(25)])
        assert all(r.value == "ok" for r in res)
        assert time.perf_counter() - t0 >= 1.4  # 25 requests at 10/s after a burst of 10


def test_the_key_is_sent_but_never_shown():
    with FakeOpenAIServer() as server:
        b = OpenAIBackend("m", base_url=server.url, api_key="sk-secret-123")
        run_all(b, [b.chat(ask(1))])
        assert server.auth["Bearer sk-secret-123"] == 1
        assert "sk-secret" not in repr(b)


def test_errors_a_user_can_hit_are_one_line(monkeypatch):
    with pytest.raises(BackendError, match="^OPENAI_API_KEY is not set; export"):
        get_backend("openai:gpt-4o-mini")
    with pytest.raises(UsageError, match="unknown provider"):
        get_backend("huggingface:x")
    b = OpenAIBackend(
        "m", base_url="http://127.0.0.1:9/v1", api_key="k", max_http_retries=1, backoff_base=0.01
    )
    [e] = run_all(b, [b.chat(ask(1))])
    assert isinstance(e, BackendError) and str(e).startswith("cannot reach http://127.0.0.1:9/v1")


def test_http_client_errors_say_what_to_check():
    from aiohttp import web

    server = FakeOpenAIServer()

    async def unauthorized(request):
        return web.json_response({"error": {"message": "Incorrect API key"}}, status=401)

    server.app = lambda: _app_with(unauthorized)  # type: ignore[method-assign]
    with server:
        b = OpenAIBackend("m", base_url=server.url, api_key="bad")
        [e] = run_all(b, [b.chat(ask(1))])
    assert isinstance(e, BackendError)
    assert "401 unauthorized (Incorrect API key); check OPENAI_API_KEY" in str(e)


def _app_with(handler):
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


def test_the_real_openai_sdk_talks_to_the_loopback_server():
    from openai import AsyncOpenAI

    with FakeOpenAIServer(order_responder) as server:

        async def main():
            client = AsyncOpenAI(base_url=server.url, api_key="k", max_retries=0)
            schema = {"name": "Order", "schema": Order.model_json_schema()}
            r1 = await client.chat.completions.create(
                model="m",
                messages=ask(3),
                response_format={"type": "json_schema", "json_schema": schema},
            )
            tool = {
                "type": "function",
                "function": {"name": "Order", "parameters": schema["schema"]},
            }
            r2 = await client.chat.completions.create(
                model="m", messages=ask(4), tools=[tool], tool_choice="required"
            )
            r3 = await client.chat.completions.create(model="m", messages=ask(5))
            await client.close()
            return r1, r2, r3

        r1, r2, r3 = asyncio.run(main())
    assert Order.model_validate_json(r1.choices[0].message.content).order == "GL-3"
    args = r2.choices[0].message.tool_calls[0].function.arguments
    assert Order.model_validate_json(args).order == "GL-4"
    assert r3.usage.completion_tokens > 0


# -- Ollama -------------------------------------------------------------------------------
def test_ollama_backend_sends_the_schema_as_format_and_reasks(monkeypatch):
    answers = iter(['{"order": "x", "late": 1}', '{"order": "GL-5", "late": false}'])
    with FakeOpenAIServer(lambda body: next(answers)) as server:
        monkeypatch.setenv("OLLAMA_HOST", server.root)  # the user's setting is honoured
        b = get_backend("ollama:llama3.1:8b", timeout=5)
        [r] = run_all(b, [b.chat(ask(5), response_model=Order, max_retries=1, seed=1)])
        assert r.value == Order(order="GL-5", late=False) and r.usage.attempts == 2
        first = server.bodies[0]
        assert first["model"] == "llama3.1:8b"
        assert first["format"]["title"] == "Order" and first["options"]["seed"] == 1
        assert "pattern" in server.bodies[1]["messages"][-1]["content"]


def test_ollama_retries_5xx_and_reports_an_unreachable_host():
    with FakeOpenAIServer(script=["500"]) as server:
        b = get_backend("ollama:m", base_url=server.root, backoff_base=0.01)
        [r] = run_all(b, [b.chat(ask(1))])
        assert r.value == "ok" and server.counts["500"] == 1
    b = get_backend("ollama:m", base_url="http://127.0.0.1:9", max_http_retries=0)
    [e] = run_all(b, [b.chat(ask(1))])
    assert isinstance(e, BackendError) and "cannot reach Ollama at http://127.0.0.1:9" in str(e)


def test_the_fake_backend_reasks_through_the_same_loop_as_the_real_ones():
    from distill.backends import FakeBackend
    from distill.models import Price

    fake = FakeBackend(
        answers=['{"order": "48213", "late": true}', '{"order": "GL-1", "late": true}'],
        price=Price(1e6, 1e6),  # a dollar a token: cost = tokens
    )
    r = asyncio.run(fake.chat(ask(1), response_model=Order, max_retries=1))
    assert r.value == Order(order="GL-1", late=True) and r.usage.attempts == 2
    assert fake.requests[1][-2]["content"] == '{"order": "48213", "late": true}'
    assert fake.requests[1][-1]["content"].startswith("That output was rejected: order: ")
    assert r.usage.cost_usd == r.usage.prompt_tokens + r.usage.completion_tokens
    with pytest.raises(InvalidOutput, match="order"):
        asyncio.run(
            FakeBackend(answers=['{"order": "x", "late": 1}']).chat(
                ask(1), response_model=Order, max_retries=0
            )
        )
