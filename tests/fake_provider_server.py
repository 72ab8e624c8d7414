"""A loopback server speaking Anthropic's Messages API and Gemini's generateContent, with the
faults, counts and responders of FakeOpenAIServer (fake_openai_server.py), which it extends
(its OpenAI and Ollama routes still answer).

    with FakeProviderServer(responder, script=["429", "429"]) as server:
        env = {"ANTHROPIC_BASE_URL": server.root}      # or --base-url server.root
        ...
        assert max(server.finished_convos.values()) == 1

POST /v1/messages answers a forced tool call (`tool_use`, instructor's TOOLS mode) or text;
POST /{version}/models/{model}:generateContent answers a `functionCall` or text. Each request
is handed to `responder` in OpenAI's shape (system first, `tools[0].function.parameters` the
schema), so responders are shared with the OpenAI tests; a reply that is not a JSON object
comes back as plain text, as a model that ignored the tool would answer.
`finished_convos[key]` counts the answers per conversation (`convo_key`: the non-system
messages' roles and text), which matches calls.sqlite rows whatever the wire format.
Run it as a process for benchmarks: `python tests/fake_provider_server.py --latency 0.2`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

from aiohttp import web
from fake_openai_server import FakeOpenAIServer
from fake_openai_server import main as serve_main


def convo_key(messages: list[dict[str, Any]]) -> str:
    """A conversation's key without its system prompt (each API carries that differently)."""
    turns = [
        [m["role"], str(m.get("content") or "")] for m in messages if m.get("role") != "system"
    ]
    return hashlib.sha256(json.dumps(turns).encode()).hexdigest()


def _anthropic_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        b.get("text", "") if b.get("type") == "text" else json.dumps(b.get("input", b))
        for b in content
    )


def _gemini_schema(schema: Any) -> Any:
    """Gemini's upper-case schema types back to JSON Schema's."""
    if isinstance(schema, dict):
        out = {k: _gemini_schema(v) for k, v in schema.items()}
        if isinstance(out.get("type"), str):
            out["type"] = out["type"].lower()
        for key in ("minItems", "maxItems", "minLength", "maxLength"):
            if key in out:
                out[key] = int(out[key])
        return out
    if isinstance(schema, list):
        return [_gemini_schema(x) for x in schema]
    return schema


def _as_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class FakeProviderServer(FakeOpenAIServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.finished_convos: Counter[str] = Counter()
        self.shaped: list[dict[str, Any]] = []  # answered requests in OpenAI's shape

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/{version}/models/{model}:generateContent", self._gemini)
        return app

    def _done(self, shaped: dict[str, Any]) -> None:
        self._answered(shaped)
        with self._lock:
            self.finished_convos[convo_key(shaped["messages"])] += 1
            if self.keep_bodies:
                self.shaped.append(shaped)

    async def _anthropic(self, request: web.Request) -> web.Response:
        body, early = await self._common(request)
        if early is not None:
            return early
        assert body is not None
        system = body.get("system") or []
        system_text = system if isinstance(system, str) else "".join(b["text"] for b in system)
        messages = [{"role": "system", "content": system_text}] if system_text else []
        messages += [
            {"role": m["role"], "content": _anthropic_text(m["content"])} for m in body["messages"]
        ]
        shaped: dict[str, Any] = {"model": body.get("model"), "messages": messages}
        tools = body.get("tools") or []
        if tools:
            shaped["tools"] = [
                {"function": {"name": t["name"], "parameters": t["input_schema"]}} for t in tools
            ]
        text = self.responder(shaped)
        args = _as_object(text) if tools else None
        if args is not None:
            content: list[dict[str, Any]] = [
                {"type": "tool_use", "id": "toolu_1", "name": tools[0]["name"], "input": args}
            ]
        else:
            content = [{"type": "text", "text": text}]
        prompt = sum(len(m["content"]) for m in messages) // 4
        self._done(shaped)
        return web.json_response(
            {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": body.get("model"),
                "content": content,
                "stop_reason": "tool_use" if args is not None else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": len(text) // 4 + 1},
            }
        )

    async def _gemini(self, request: web.Request) -> web.Response:
        body, early = await self._common(request)
        if early is not None:
            return early
        assert body is not None
        system = "".join(
            p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts", [])
        )
        messages = [{"role": "system", "content": system.strip()}] if system.strip() else []
        for c in body.get("contents", []):
            role = "assistant" if c.get("role") == "model" else "user"
            text = "".join(
                p["text"] if "text" in p else json.dumps(p.get("functionCall", {}).get("args"))
                for p in c.get("parts", [])
            )
            messages.append({"role": role, "content": text})
        shaped: dict[str, Any] = {"model": request.match_info["model"], "messages": messages}
        decls = [d for t in body.get("tools", []) for d in t.get("functionDeclarations", [])]
        if decls:
            shaped["tools"] = [
                {"function": {"name": d["name"], "parameters": _gemini_schema(d["parameters"])}}
                for d in decls
            ]
        text = self.responder(shaped)
        args = _as_object(text) if decls else None
        part = (
            {"functionCall": {"name": decls[0]["name"], "args": args}}
            if args is not None
            else {"text": text}
        )
        prompt = sum(len(m["content"]) for m in messages) // 4
        self._done(shaped)
        return web.json_response(
            {
                "candidates": [
                    {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP"}
                ],
                "usageMetadata": {
                    "promptTokenCount": prompt,
                    "candidatesTokenCount": len(text) // 4 + 1,
                    "totalTokenCount": prompt + len(text) // 4 + 1,
                },
            }
        )


if __name__ == "__main__":
    serve_main(FakeProviderServer, __doc__)
