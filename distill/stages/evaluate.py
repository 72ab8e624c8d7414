"""`distill eval`: did the distillation work? The student against its base on the held-out
split (style, closeness to the reference, a judge's preference), plus the two ways a
fine-tune goes wrong: copying its training data, and forgetting general skills.

Every model call goes through calls.sqlite (stage "eval"), so a rerun re-sends nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from distill.backends.base import Backend
from distill.calls import CallLog
from distill.errors import DistillError, InputError, RunError, UsageError
from distill.evaluation.asking import ask_reply, ask_verdict
from distill.evaluation.embeddings import (  # noqa: F401 - re-exported
    EMBEDDING_MODEL,
    EMBEDDING_PACKAGE,
    Embedder,
    cosine,
    load_embedder,
)
from distill.evaluation.inputs import (  # noqa: F401 - re-exported
    JUDGE_MAX_TOKENS,
    PROBE_MAX_TOKENS,
    REPLY_MAX_TOKENS,
    Item,
    Verdict,
    held_out_items,
    judge_messages,
    judge_template,
    load_probe,
    load_style,
    probe_subset,
    reply_max_tokens,
)
from distill.evaluation.scoring import (  # noqa: F401 - re-exported
    Answer,
    Answers,
    Extra,
    Plan,
    score,
)
from distill.evaluation.verdict import (  # noqa: F401 - re-exported
    MIN_EVAL_EXAMPLES,
    estimate_text,
    headline,
    verdict_line,
)
from distill.models import parse_model
from distill.rubric import eval_section
from distill.runs import (
    Run,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_jsonl,
    sha256_text,
)
from distill.style import StyleSpec

STAGE = "eval"
LOCAL_BATCH = 32  # rows per generate() for in-process models

BackendFactory = Callable[[str], Backend]
Progress = Callable[[int, int], None]


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
    warn: Callable[[str], None] | None = None,
    compare: list[str] | None = None,
) -> dict[str, Any]:
    """Evaluate the student against its base on the run's eval.jsonl; write
    eval/<student>/{results.jsonl,report.json,report.html} and return the report.

    `backends` maps model strings to ready backends (tests); others come from `factory`
    (default: distill.backends.get_backend). `embedder=None` skips the similarity metric.
    `compare`: more students asked the same items and probe, shown side by side with the base
    and the student (default: for the run's DPO student, the SFT student it was tuned from)."""
    if concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, not {concurrency}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, not {limit}")
    eval_path = run.require("eval.jsonl", "run `distill split` first to hold out an eval set")
    plan = plan_models(run, student, base, judge)
    spec = load_style(run) if style == "run" else style
    records = _with_ids(run, list(read_jsonl(eval_path)))
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
    if len(items) < MIN_EVAL_EXAMPLES and warn is not None:
        warn(
            f"warning: {len(items)} held-out example(s): too few to conclude whether training "
            f"worked (at least {MIN_EVAL_EXAMPLES}); the scores will be shown, but hold out more "
            f"with `distill split --eval-size {MIN_EVAL_EXAMPLES + 10}`"
        )
    probe = probe_subset(load_probe(probe_path), probe_size)

    made = dict(backends or {})

    def backend(spec_: str, url: str | None = base_url) -> Backend:
        if spec_ not in made:
            made[spec_] = (factory or _default_factory(url))(spec_)
        return made[spec_]

    student_b, base_b = backend(plan.student), backend(plan.base)
    extras = {
        name: backend(name)
        for name in (default_compare(run, plan) if compare is None else compare)
        if name not in (plan.student, plan.base)
    }
    judge_b = None
    if plan.judge:
        try:
            judge_b = backend(plan.judge, base_url or plan.judge_base_url)
        except DistillError as e:  # the judge is optional: say why it is missing, go on
            plan.judge_skipped = f"the judge {plan.judge} is unavailable: {e}"
            plan.judge = None
    calls = CallLog(run.file("calls.sqlite"))
    injected = set(backends or {})

    async def ask_then_close() -> tuple[Answers, dict[str, Any] | None]:
        try:
            got = await _ask_all(
                items,
                probe,
                student_b,
                base_b,
                judge_b,
                spec,
                calls,
                concurrency,
                progress,
                extras,
            )
            both = [
                (_customer(it.context), s.text, b.text)
                for it, s, b in zip(items, got.student, got.base, strict=True)
                if s.text is not None and b.text is not None
            ]
            why_not = None if judge_b else (plan.judge_skipped or "no judge").split(";")[0]
            rubric = await eval_section(spec, judge_b, why_not, calls, STAGE, both, concurrency)
            return got, rubric
        finally:
            for name, b in made.items():
                close = getattr(b, "aclose", None)
                if name not in injected and close is not None:
                    await close()

    try:
        answers, rubric = asyncio.run(ask_then_close())
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
    if rubric is not None:
        report["rubric"] = rubric  # rubric rules: pass rates per rule, or why not judged
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


def default_compare(run: Run, plan: Plan) -> list[str]:
    """The SFT student of the run's DPO student (manifest `preference`), when that is the
    student evaluated: so eval shows base, SFT and SFT+DPO side by side."""
    pref = run.manifest.get("preference") or {}
    reference = pref.get("reference")
    if pref.get("model") == plan.student and reference and reference != plan.base:
        return [str(reference)]
    return []


def _customer(context: list[dict[str, Any]]) -> str:
    return next((str(m["content"]) for m in reversed(context) if m["role"] == "user"), "")


def _with_ids(run: Run, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """eval.jsonl's lines with the id and plan point split recorded beside them
    (eval_ids.jsonl, same order), when it did and the two still line up."""
    ids_path = run.file("eval_ids.jsonl")
    if not ids_path.exists():
        return records
    ids = list(read_jsonl(ids_path))
    if len(ids) != len(records):
        return records
    return [
        {**rec, "id": i.get("id"), "meta": i.get("meta") or {}}
        for rec, i in zip(records, ids, strict=True)
    ]


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
    extras: dict[str, Backend] | None = None,
) -> Answers:
    extras = extras or {}
    if student.ref.provider == "local" and base.ref.provider == "local":
        # in-process models answer in batches: keep a whole batch in flight (32 rows run at
        # 3.4x the tokens per second of 8 on 2 CPU cores)
        concurrency = max(concurrency, LOCAL_BATCH)
    sem = asyncio.Semaphore(concurrency)
    n_models = 2 + len(extras)
    total = n_models * (len(items) + len(probe)) + ((n_models - 1) * 2 * len(items) if judge else 0)
    done = 0

    async def ask(b: Backend, messages: list[dict[str, Any]], max_tokens: int) -> Answer:
        nonlocal done
        async with sem:
            a = await ask_reply(b, calls, STAGE, messages, max_tokens)
        done += 1
        if progress:
            progress(done, total)
        return a

    async def verdict(messages: list[dict[str, Any]]) -> Verdict | str:
        nonlocal done
        assert judge is not None
        async with sem:
            v = await ask_verdict(judge, calls, STAGE, messages)
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
        extra_ans = {name: await everything(b) for name, b in extras.items()}
        s_ans, ps_ans = await everything(student)
    else:
        (s_ans, ps_ans), (b_ans, pb_ans), *rest = await asyncio.gather(
            everything(student), everything(base), *(everything(b) for b in extras.values())
        )
        extra_ans = dict(zip(extras, rest, strict=True))
    for name, got in (("student", s_ans + ps_ans), ("base", b_ans + pb_ans)):
        if got and all(a.error for a in got):
            raise _all_failed(name, got)

    async def judged(
        answers: list[Answer],
    ) -> list[tuple[Verdict | str | None, Verdict | str | None]]:
        nonlocal done
        verdicts: list[tuple[Verdict | str | None, Verdict | str | None]] = [(None, None)] * len(
            items
        )
        if judge is None:
            return verdicts
        template = judge_template()
        pairs = [
            i
            for i, (s, b) in enumerate(zip(answers, b_ans, strict=True))
            if s.text is not None and b.text is not None
        ]
        jobs = []
        for i in pairs:
            s, b = answers[i].text or "", b_ans[i].text or ""
            jobs.append(verdict(judge_messages(template, style, items[i], s, b)))
            jobs.append(verdict(judge_messages(template, style, items[i], b, s)))
        got_v = await asyncio.gather(*jobs)
        done += 2 * (len(items) - len(pairs))
        for k, i in enumerate(pairs):
            verdicts[i] = (got_v[2 * k], got_v[2 * k + 1])
        return verdicts

    verdicts = await judged(s_ans)
    extra = {
        name: Extra(replies, probed, await judged(replies))
        for name, (replies, probed) in extra_ans.items()
    }
    return Answers(s_ans, b_ans, ps_ans, pb_ans, verdicts, extra)


def _all_failed(name: str, got: list[Answer]) -> DistillError:
    first = next(a.error for a in got if a.error)
    return DistillError(f"every {name} call failed; the first error: {first}")
