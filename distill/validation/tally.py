"""The statistics of the valid examples: exact o200k token counts (quicktok, batched on a
background thread), roles, messages and replies per example, system prompts, the billed
tokens and OpenAI's default epochs. Kept as counters and histograms, so memory does not grow
with the file; summarised with polars."""

from __future__ import annotations

import json
import math
from array import array
from typing import Any

from distill.validation.problems import MAX_STORED_PER_CODE, Collector
from distill.validation.rules import ROLES

TOKEN_BATCH = 4096  # examples per tokenizer call

# OpenAI's default epoch rule for fine-tuning jobs (from the cookbook's data-prep notebook).
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25
TOKENS_PER_MESSAGE = 3  # <|start|>role ... <|end|> overhead, as in the cookbook
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>


def default_epochs(n_examples: int) -> int:
    """OpenAI's default: 3 epochs, raised or lowered so epochs x examples is in 100..25,000."""
    if n_examples <= 0:
        return 0
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n_examples))
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


class SystemPrompts:
    """Which system prompt each example uses, to flag missing and inconsistent ones at the end.
    Bounded: at most MAX_DISTINCT prompts and MAX_LINES line numbers are kept; counts are exact."""

    MAX_DISTINCT = 1000
    MAX_LINES = 100_000

    def __init__(self) -> None:
        self.prompts: dict[str, list[Any]] = {}  # prompt -> [count, first line, array of lines]
        self.missing = array("q")
        self.missing_count = 0
        self.with_prompt = 0
        self.untracked = 0  # examples whose prompt came after MAX_DISTINCT others
        self.stored = 0

    def add(self, line: int, messages: list[dict[str, Any]]) -> None:
        first = messages[0]
        if first["role"] != "system" or not isinstance(first.get("content"), str):
            self.missing_count += 1
            if len(self.missing) < MAX_STORED_PER_CODE:
                self.missing.append(line)
            return
        self.with_prompt += 1
        prompt = first["content"]
        entry = self.prompts.get(prompt)
        if entry is None:
            if len(self.prompts) >= self.MAX_DISTINCT:
                self.untracked += 1
                return
            entry = self.prompts[prompt] = [0, line, array("q")]
        entry[0] += 1
        if self.stored < self.MAX_LINES:
            entry[2].append(line)
            self.stored += 1

    def report(self, collector: Collector, total: int) -> None:
        if total == 0:
            return
        if self.with_prompt == 0:
            collector.add(
                None,
                "no-system-prompt",
                "no example has a system prompt; add the one you will use at inference time",
            )
            return
        if self.missing_count:
            for line in self.missing:
                collector.add(line, "no-system-prompt", "no system prompt, unlike other examples")
            collector.counts["no-system-prompt"] += self.missing_count - len(self.missing)
        if len(self.prompts) > 1 or self.untracked:
            common, (n, first, _) = max(self.prompts.items(), key=lambda kv: kv[1][0])
            differing = self.with_prompt - n
            added = 0
            for prompt, (_, _, lines) in self.prompts.items():
                if prompt == common:
                    continue
                shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
                message = (
                    f"system prompt {shown!r} differs from the most common one "
                    f"(line {first}, {n} of {self.with_prompt} examples)"
                )
                for line in lines:
                    collector.add(line, "system-prompt-differs", message)
                    added += 1
            collector.counts["system-prompt-differs"] += differing - added


class Tally:
    """Statistics of the valid examples: exact o200k token counts (batched through quicktok on a
    background thread), roles, messages and replies per example, system prompts. All kept as
    counters and histograms, so memory does not grow with the file."""

    def __init__(self, limit: int, collector: Collector, systems: SystemPrompts) -> None:
        import quicktok

        self.quicktok = quicktok
        self.enc = quicktok.get_encoding("o200k_base")
        self.limit = limit
        self.collector = collector
        self.systems = systems
        # per-message overhead plus the role's own tokens
        self.role_tokens = {r: TOKENS_PER_MESSAGE + self.enc.count(r) for r in sorted(ROLES)}
        self.roles: dict[str, int] = dict.fromkeys(self.role_tokens, 0)
        self.msg_hist: dict[int, int] = {}
        self.reply_hist: dict[int, int] = {}
        self.cached: dict[str, int] = {}  # repeated system prompts, counted once
        self.texts: list[str] = []
        self.ends: list[int] = []  # len(texts) after each pending example
        self.fixed: list[int] = []  # per pending example: overhead + cached counts
        self.lines: list[int] = []
        self.token_hist: dict[int, int] = {}
        self.billed = 0
        self.over = 0
        self._pool: Any = None
        self._pending: Any = None

    def add_simple(self, line: int, obj: Any) -> bool:
        """Tally `obj` if it is a valid example of the common shape ({"messages": [...]} with
        only role and content per message); False, with nothing tallied, for anything else."""
        if type(obj) is not dict or len(obj) != 1:
            return False
        msgs = obj.get("messages")
        if type(msgs) is not list or not msgs:
            return False
        texts = self.texts
        start = len(texts)
        append = texts.append
        role_tokens = self.role_tokens
        roles = self.roles
        fixed = REPLY_PRIMING
        replies = 0
        done = 0
        for m in msgs:
            if type(m) is not dict or len(m) != 2:
                break
            role = m.get("role")
            content = m.get("content")
            if type(role) is not str or type(content) is not str or not content:
                break
            rt = role_tokens.get(role)
            if rt is None:
                break
            fixed += rt
            roles[role] += 1
            done += 1
            if role == "system":
                n = self.cached.get(content)
                if n is None:
                    n = self._count_one(content)
                    if len(self.cached) < 1024:
                        self.cached[content] = n
                fixed += n
            else:
                if role == "assistant":
                    replies += 1
                append(content)
        if done != len(msgs) or not replies:
            del texts[start:]
            for m in msgs[:done]:
                roles[m["role"]] -= 1
            return False
        self._commit(line, msgs, fixed, replies)
        return True

    def add(self, line: int, obj: dict[str, Any]) -> None:
        """Tally an example that passed `_check` (any shape OpenAI accepts)."""
        texts = self.texts
        fixed = REPLY_PRIMING
        replies = 0
        msgs = obj["messages"]
        for m in msgs:
            role = m["role"]
            fixed += self.role_tokens[role]
            self.roles[role] += 1
            replies += role == "assistant"
            c = m.get("content")
            if c:
                if role == "system":
                    fixed += self._count_one(c)
                else:
                    texts.append(c)
            name = m.get("name")
            if name:
                texts.append(name)
                fixed += TOKENS_PER_NAME
            for key in ("tool_calls", "function_call"):
                if m.get(key):
                    texts.append(json.dumps(m[key], ensure_ascii=False))
        for key in ("tools", "functions"):
            if obj.get(key):
                texts.append(json.dumps(obj[key], ensure_ascii=False))
        self._commit(line, msgs, fixed, replies)

    def _commit(self, line: int, msgs: list[Any], fixed: int, replies: int) -> None:
        self.ends.append(len(self.texts))
        self.fixed.append(fixed)
        self.lines.append(line)
        n = len(msgs)
        self.msg_hist[n] = self.msg_hist.get(n, 0) + 1
        self.reply_hist[replies] = self.reply_hist.get(replies, 0) + 1
        self.systems.add(line, msgs)
        if len(self.lines) >= TOKEN_BATCH:
            self.flush()

    def _count_one(self, text: str) -> int:
        try:
            return int(self.enc.count(text))
        except Exception:  # a string the tokenizer cannot take; never reached for checked lines
            return int(self.enc.count(text.encode("utf-8", "replace").decode("utf-8")))

    def _count_batch(self, texts: list[str]) -> Any:
        import numpy as np

        try:
            return np.asarray(self.quicktok.count_batch(self.enc, texts), dtype=np.int64)
        except Exception:
            return np.array([self._count_one(t) for t in texts], dtype=np.int64)

    def flush(self, final: bool = False) -> None:
        """Send the pending batch to the tokenizer thread; fold in the batch sent before it."""
        if self._pending is not None:
            self._fold(*self._pending)
            self._pending = None
        if self.lines:
            batch = (self.texts, self.ends, self.fixed, self.lines)
            self.texts, self.ends, self.fixed, self.lines = [], [], [], []
            if final:
                self._fold(self._count_batch(batch[0]), *batch[1:])
            else:
                if self._pool is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="distill-tokens")
                self._pending = (self._pool.submit(self._count_batch, batch[0]), *batch[1:])
        if final and self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _fold(self, counts: Any, ends_: list[int], fixed: list[int], lines: list[int]) -> None:
        import numpy as np

        if not isinstance(counts, np.ndarray):
            counts = counts.result()
        cum = np.concatenate(([0], np.cumsum(counts)))
        ends = np.asarray(ends_, dtype=np.int64)
        starts = np.concatenate(([0], ends[:-1]))
        per_example = cum[ends] - cum[starts] + np.asarray(fixed, dtype=np.int64)
        values, freq = np.unique(per_example, return_counts=True)
        hist = self.token_hist
        for v, f in zip(values.tolist(), freq.tolist(), strict=True):
            hist[v] = hist.get(v, 0) + f
        self.billed += int(np.minimum(per_example, self.limit).sum())
        for idx in np.nonzero(per_example > self.limit)[0].tolist():
            self.over += 1
            self.collector.add(
                lines[idx],
                "too-many-tokens",
                f"{int(per_example[idx]):,} tokens; the model trains on at most {self.limit:,} "
                "per example, the rest is cut off",
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def summarise(hist: dict[int, int]) -> dict[str, Any]:
    """min, mean, p95 (nearest rank), max and total of a value -> count histogram, with polars."""
    import polars as pl

    if not hist:
        return {"min": None, "mean": None, "p95": None, "max": None, "total": 0}
    df = pl.DataFrame(
        {"value": list(hist.keys()), "n": list(hist.values())},
        schema={"value": pl.Int64, "n": pl.Int64},
    ).sort("value")
    n = int(df["n"].sum())
    rank = math.ceil(0.95 * n)
    row = (
        df.with_columns(pl.col("n").cum_sum().alias("cum"))
        .filter(pl.col("cum") >= rank)
        .row(0, named=True)
    )
    agg = df.select(
        pl.col("value").min().alias("min"),
        pl.col("value").max().alias("max"),
        (pl.col("value") * pl.col("n")).sum().alias("total"),
    ).row(0, named=True)
    return {
        "min": int(agg["min"]),
        "mean": round(agg["total"] / n, 2),
        "p95": int(row["value"]),
        "max": int(agg["max"]),
        "total": int(agg["total"]),
    }


def model_facts(model: str) -> tuple[str, int, float | None]:
    """(resolved name, per-example token limit, training USD per 1M tokens or None)."""
    from distill.models import (
        fine_tune_context,
        fine_tune_facts,
        parse_model,
        resolve_fine_tune_model,
    )

    ref = parse_model(model)
    if ref.provider != "openai":
        return str(ref), fine_tune_context(ref.name), None
    facts = fine_tune_facts(ref.name)
    price = float(facts["train_per_1m"]) if facts and "train_per_1m" in facts else None
    return resolve_fine_tune_model(ref.name), fine_tune_context(ref.name), price
