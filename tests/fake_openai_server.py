"""A loopback OpenAI-compatible server for tests and benchmarks (and an Ollama /api/chat).

    with FakeOpenAIServer(responder=my_fn, faults={"429": 0.1, "500": 0.05}) as server:
        backend = OpenAIBackend("gpt-4o-mini", base_url=server.url, api_key="test")
        ...
        assert server.counts["429"] > 0 and max(server.finished.values()) == 1

It answers POST /v1/chat/completions (plain text, `response_format` json_schema/json_object, and
`tools` with a forced function call) and POST /api/chat (Ollama, `format` = a JSON schema).
`responder(body) -> str` makes the reply text (for typed calls, the JSON); the default builds a
minimal instance of the requested schema. Faults are injected by a seeded RNG (`faults` maps a
kind to a probability) or by `script` (kinds for the first requests, in order):

    429        HTTP 429 with Retry-After: `retry_after` seconds
    500        HTTP 500
    malformed  HTTP 200 whose body is not JSON
    slow       the right answer, after `slow_s` seconds
    hang       no answer for `hang_s` seconds (longer than the client's timeout)

`counts` counts requests, answers and each fault; `finished[key]` counts the answers given for
each distinct request body, so "no finished request was sent twice" is `max(finished) == 1`.
Run it as a separate process for benchmarks: `python tests/fake_openai_server.py --latency 0.2`
prints `PORT <n>` and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

Responder = Callable[[dict[str, Any]], str]


def schema_instance(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A small valid instance of a JSON schema (enough for pydantic-made schemas)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return schema_instance(defs[schema["$ref"].split("/")[-1]], defs)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return schema_instance(schema[key][0], defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    t = schema.get("type", "object")
    if isinstance(t, list):
        t = t[0]
    if t == "object":
        props = schema.get("properties", {})
        return {k: schema_instance(v, defs) for k, v in props.items()}
    if t == "array":
        n = max(1, int(schema.get("minItems", 1)))
        return [schema_instance(schema.get("items", {}), defs) for _ in range(n)]
    if t == "string":
        return "x" * int(schema.get("minLength", 2))
    if t in ("integer", "number"):
        return schema.get("minimum", 0)
    if t == "boolean":
        return True
    return None


JSON_HINT = "Answer with one JSON object matching this schema: "


def request_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request asks for, whatever the mode (OpenAI or Ollama)."""
    if body.get("tools"):
        return body["tools"][0]["function"]["parameters"]
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_schema":
        return rf["json_schema"]["schema"]
    if isinstance(body.get("format"), dict):
        return body["format"]
    first = (body.get("messages") or [{}])[0]
    if str(first.get("content") or "").startswith(JSON_HINT):  # Mode.JSON puts it in the prompt
        return json.loads(first["content"][len(JSON_HINT) :])
    return None


def default_responder(body: dict[str, Any]) -> str:
    schema = request_schema(body)
    if schema is None:
        return "ok"
    return json.dumps(schema_instance(schema))


_REPLIES = [
    "Happy to help with {topic}! I've sorted it, expect an email within the hour (ref {tag}).",
    "Thanks for waiting! Just reply here with a photo and we'll take it from there today.",
    "Of course! You can change it under My account, and I've added a note for the team.",
]


def conversation_responder(body: dict[str, Any]) -> str:
    """A GreenLeaf-style chat for `distill generate`'s output type (any number of exchanges),
    different for every prompt; other schemas get the default answer."""
    schema = request_schema(body)
    props = (schema or {}).get("properties", {})
    if "exchanges" not in props:
        return default_responder(body)
    turns = int(props["exchanges"].get("minItems", 1))
    prompt = str(body["messages"][-1].get("content") or "")
    tag = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    topic = prompt.split("Topic: ", 1)[1].split("\n", 1)[0] if "Topic: " in prompt else "orders"
    return json.dumps(
        {
            "exchanges": [
                {
                    "user": f"Hi, a question about {topic} (case {tag}-{i}).",
                    "assistant": _REPLIES[i % len(_REPLIES)].format(topic=topic, tag=tag),
                }
                for i in range(turns)
            ]
        }
    )


RESPONDERS = {"default": default_responder, "conversation": conversation_responder}


def body_key(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def messages_key(messages: list[dict[str, Any]]) -> str:
    """The key tests use to match server requests with calls.sqlite rows."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


class PromptCache:
    """OpenAI's prompt caching, simulated: a request's prompt is its output schema (tools or
    response_format) then its messages, in o200k tokens; the longest prefix of 1,024 tokens
    plus a multiple of 128 that an earlier request started with is served as cached.

    `shared` also counts, for every request, the tokens of the longest prefix it has in common
    with any earlier request (its neighbours in sorted order), cache minimum or not."""

    MIN, STEP = 1024, 128

    def __init__(self) -> None:
        import quicktok

        self.enc = quicktok.get_encoding("o200k_base")
        self.seen: set[int] = set()
        self.sorted: list[tuple[int, ...]] = []
        self.requests = self.prompt_tokens = self.cached_tokens = self.shared_tokens = 0

    def tokens(self, body: dict[str, Any]) -> tuple[int, ...]:
        schema = body.get("tools") or body.get("response_format") or ""
        parts = [json.dumps(schema, sort_keys=True)] if schema else []
        parts += [f"{m.get('role')}: {m.get('content') or ''}" for m in body.get("messages", [])]
        return tuple(self.enc.encode("\n".join(parts)))

    def serve(self, body: dict[str, Any]) -> tuple[int, int]:
        """(prompt tokens, cached tokens) for one request, remembering its prefixes."""
        import bisect

        toks = self.tokens(body)
        steps = range(self.MIN, len(toks) + 1, self.STEP)
        cached = max([k for k in steps if hash(toks[:k]) in self.seen], default=0)
        self.seen.update(hash(toks[:k]) for k in steps)
        i = bisect.bisect_left(self.sorted, toks)
        shared = max(
            [_common(toks, self.sorted[j]) for j in (i - 1, i) if 0 <= j < len(self.sorted)],
            default=0,
        )
        self.sorted.insert(i, toks)
        self.requests += 1
        self.prompt_tokens += len(toks)
        self.cached_tokens += cached
        self.shared_tokens += shared
        return len(toks), cached


def _common(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class FakeOpenAIServer:
    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency: float = 0.0,
        faults: dict[str, float] | None = None,
        script: list[str | None] | None = None,
        retry_after: float = 0.05,
        slow_s: float = 0.3,
        hang_s: float = 5.0,
        seed: int = 0,
        keep_bodies: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        prompt_cache: bool = False,
    ) -> None:
        self.responder = responder or default_responder
        self.prompt_cache = PromptCache() if prompt_cache else None
        self.latency = latency
        self.faults = dict(faults or {})
        self.script = list(script or [])
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.hang_s = hang_s
        self.rng = random.Random(seed)
        self.keep_bodies = keep_bodies
        self.host, self.port = host, port
        self.counts: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()  # body key -> answers given
        self.finished_messages: Counter[str] = Counter()  # messages key -> answers given
        self.bodies: list[dict[str, Any]] = []
        self.auth: Counter[str] = Counter()
        self._lock = threading.RLock()  # re-entered when a batch answers its requests
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/chat/completions", self._openai)
        app.router.add_post("/api/chat", self._ollama)
        return app

    async def start_async(self) -> None:
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> FakeOpenAIServer:
        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start_async())
            self._ready.set()
            loop.run_forever()
            assert self._runner is not None
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-openai")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- behaviour ------------------------------------------------------------------------
    def _pick_fault(self) -> str | None:
        with self._lock:
            if self.script:
                return self.script.pop(0)
            r = self.rng.random()
            acc = 0.0
            for kind, p in self.faults.items():
                acc += p
                if r < acc:
                    return kind
            return None

    async def _common(
        self, request: web.Request
    ) -> tuple[dict[str, Any] | None, web.Response | None]:
        body = await request.json()
        with self._lock:
            self.counts["requests"] += 1
            self.auth[request.headers.get("Authorization", "")] += 1
            if self.keep_bodies:
                self.bodies.append(body)
        fault = self._pick_fault()
        if fault:
            with self._lock:
                self.counts[fault] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault == "429":
            return None, web.json_response(
                {"error": {"message": "rate limited", "type": "rate_limit"}},
                status=429,
                headers={"Retry-After": f"{self.retry_after:g}"},
            )
        if fault == "500":
            return None, web.json_response({"error": {"message": "boom"}}, status=500)
        if fault == "malformed":
            return None, web.Response(
                text='{"id": "x", "choices": [', content_type="application/json"
            )
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
            return None, web.json_response({"error": {"message": "too late"}}, status=504)
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        return body, None

    def _answered(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.counts["ok"] += 1
            self.finished[body_key(body)] += 1
            self.finished_messages[messages_key(body.get("messages", []))] += 1

    async def _openai(self, request: web.Request) -> web.Response:
        body, early = await self._common(request)
        if early is not None:
            return early
        assert body is not None
        return web.json_response(self.completion(body))

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat.completion object answering `body` (counted as answered)."""
        text = self.responder(body)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": name, "arguments": text},
                    }
                ],
            }
        prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4
        cached = 0
        if self.prompt_cache is not None:
            with self._lock:
                prompt, cached = self.prompt_cache.serve(body)
        self._answered(body)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if body.get("tools") else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": len(text) // 4 + 1,
                "total_tokens": prompt + len(text) // 4 + 1,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }

    async def _ollama(self, request: web.Request) -> web.Response:
        body, early = await self._common(request)
        if early is not None:
            return early
        assert body is not None
        text = self.responder(body)
        prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4
        self._answered(body)
        return web.json_response(
            {
                "model": body.get("model", "fake"),
                "created_at": "2026-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": text},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": prompt,
                "eval_count": len(text) // 4 + 1,
            }
        )


def main(server_class: type[FakeOpenAIServer] | None = None, doc: str | None = None) -> None:
    """Serve until killed, printing `PORT n` (subprocess tests and benchmarks read it)."""
    ap = argparse.ArgumentParser(description=(doc or __doc__).splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--responder", choices=sorted(RESPONDERS), default="default")
    ap.add_argument("--prompt-cache", action="store_true", help="simulate OpenAI's prompt cache")
    args = ap.parse_args()
    server = (server_class or FakeOpenAIServer)(
        RESPONDERS[args.responder],
        latency=args.latency,
        port=args.port,
        keep_bodies=False,
        prompt_cache=args.prompt_cache,
    )

    async def serve() -> None:
        await server.start_async()
        print(f"PORT {server.port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
