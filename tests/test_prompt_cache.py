"""Prompt caching: every hosted request starts with the same words (instructions, style spec,
seeds) and ends with its plan point; the tokens the provider serves from its cache
(usage.prompt_tokens_details.cached_tokens) are billed at the cached price and shown."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_openai_server import FakeOpenAIServer, conversation_responder

from distill.calls import CallLog, CallRecord
from distill.cli import cli
from distill.models import batch_price, call_cost, parse_model, price_of

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds" / "greenleaf.jsonl"


def generate(url: str, *extra: str):
    return CliRunner().invoke(
        cli,
        ["generate", "--seeds", str(SEEDS), "--n", "8", "--teacher", "openai:gpt-4o-mini"]
        + ["--base-url", url, *extra],
    )


def test_cached_tokens_are_billed_at_the_cached_price_and_shown(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAIServer(conversation_responder, prompt_cache=True) as server:
        r = generate(server.url, "--examples", "16")
        assert r.exit_code == 0, r.output
        cache = server.prompt_cache
    assert cache is not None and cache.cached_tokens > 0
    share = cache.cached_tokens / cache.prompt_tokens
    assert f"Prompt cache: {cache.cached_tokens:,} of {cache.prompt_tokens:,}" in r.output
    assert f"({share:.0%})" in r.output
    run = Path("outputs") / "greenleaf"
    stage = json.loads((run / "manifest.json").read_text())["stages"]["generate"]
    assert stage["usage"]["cached_tokens"] == cache.cached_tokens
    assert stage["usage"]["cached_share"] == pytest.approx(share, abs=1e-4)
    price = price_of(parse_model("gpt-4o-mini"))
    con = sqlite3.connect(run / "calls.sqlite")
    calls = list(con.execute("SELECT prompt_tokens, completion_tokens, cached_tokens FROM calls"))
    con.close()
    expected = sum(call_cost(price, p, c, k) for p, c, k in calls)
    uncached = sum(call_cost(price, p, c) for p, c, _ in calls)
    assert stage["cost_usd"] == pytest.approx(expected, abs=2e-6) and expected < uncached


def test_every_request_starts_with_the_same_words_and_ends_with_its_point(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAIServer(conversation_responder, prompt_cache=True) as server:
        r = generate(server.url)  # 3 seeds shown: a shared prefix under OpenAI's minimum
        assert r.exit_code == 0, r.output
        bodies, cache = server.bodies, server.prompt_cache
    assert cache is not None and cache.cached_tokens == 0
    assert "Prompt cache: 0 of" in r.output
    # most prompt tokens sit in a prefix an earlier request had (the 1,024 floor aside)
    assert cache.shared_tokens / cache.prompt_tokens > 0.6
    systems = {json.dumps(b["messages"][0]) for b in bodies}
    heads = {b["messages"][1]["content"].split("Write one NEW chat.")[0] for b in bodies}
    tails = {b["messages"][1]["content"].split("Write one NEW chat.")[1] for b in bodies}
    assert len(systems) == len(heads) == 1 and len(tails) > 1


def test_prices_cached_and_batch():
    price = price_of(parse_model("gpt-4o-mini"))
    assert price is not None and price.cached_input_per_1m == 0.075
    assert call_cost(price, 2_000_000, 0, 1_000_000) == pytest.approx(0.15 + 0.075)
    half = batch_price(price)
    assert half is not None and call_cost(half, 2_000_000, 1_000_000, 1_000_000) == (
        pytest.approx((0.15 + 0.075 + 0.6) / 2)
    )
    # a model without a cached price bills cached tokens as input
    none = price_of(parse_model("gpt-3.5-turbo"))
    assert call_cost(none, 1_000_000, 0, 1_000_000) == pytest.approx(0.5)


def test_a_call_log_from_before_caching_opens_and_counts_cached_tokens(tmp_path):
    db = tmp_path / "calls.sqlite"
    old = sqlite3.connect(db)
    old.execute(
        "CREATE TABLE calls (key TEXT PRIMARY KEY, stage TEXT NOT NULL, model TEXT NOT NULL, "
        "request TEXT NOT NULL, response TEXT, error TEXT, prompt_tokens INTEGER NOT NULL "
        "DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL "
        "DEFAULT 0, latency_s REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 1, "
        "created_at TEXT NOT NULL)"
    )
    old.execute("INSERT INTO calls VALUES ('a','generate','m','{}','{}',NULL,10,5,0.1,0.1,1,'t')")
    old.commit()
    old.close()
    log = CallLog(db)
    assert log.get("a").cached_tokens == 0
    log.put(CallRecord("b", "generate", "m", {}, {}, prompt_tokens=2000, cached_tokens=1024))
    assert log.get("b").cached_tokens == 1024
    assert log.totals("generate")["cached_tokens"] == 1024
    log.close()


def test_dry_run_says_how_long_the_shared_prefix_is_and_what_the_cache_saves(monkeypatch):
    def dry(examples: str) -> tuple[str, float]:
        r = CliRunner().invoke(
            cli,
            ["generate", "--seeds", str(SEEDS), "--n", "300", "--teacher", "gpt-4o"]
            + ["--examples", examples, "--dry-run"],
        )
        assert r.exit_code == 0, r.output
        cost = next(x for x in r.output.splitlines() if x.startswith("Estimated cost"))
        return r.output, float(cost.split("$")[1].split()[0])

    short, cost_3 = dry("3")
    long, cost_8 = dry("8")
    assert "under the 1,024 tokens OpenAI's prompt cache needs" in short
    assert "billed at the cached price" in long and cost_8 < cost_3
