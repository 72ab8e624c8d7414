"""generate(): check everything that can be checked before a call, set up the run folder,
plan, and hand the points to the worker with the way of writing a chat that fits the teacher;
record what happened in the manifest, and fail loudly when nothing passed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from distill import runs
from distill.backends import close_backend, get_backend
from distill.backends.base import Backend
from distill.calls import CallLog
from distill.errors import BackendError, BudgetExceeded, DistillError, RunError, UsageError
from distill.knobs import recorded
from distill.rubric import RubricJudge, skipped_line, unusable
from distill.runs import Run, sha256_file
from distill.stages.generate.answer import Answer
from distill.stages.generate.axes import plan_axes
from distill.stages.generate.batch import BatchTeacher, batched
from distill.stages.generate.budget import Budget
from distill.stages.generate.chats import ConversationTypes
from distill.stages.generate.customers import CustomerPrompt, load_prompts, plan_from_prompts
from distill.stages.generate.grammar import reply_pattern
from distill.stages.generate.options import LOCAL_BATCH, PLAN_LIMIT, GenerateOptions
from distill.stages.generate.outcomes import done_so_far, reject_reasons
from distill.stages.generate.plan import PlanPoint, make_plan
from distill.stages.generate.progress import Progress
from distill.stages.generate.prompts import prompt_hashes
from distill.stages.generate.roleplay import RolePlay
from distill.stages.generate.seeds import Seed, load_seeds
from distill.stages.generate.teacher import STAGE, Teacher
from distill.stages.generate.whole_chat import WholeChat
from distill.stages.generate.worker import Worker
from distill.style import StyleSpec


@dataclass
class GenerateResult:
    run: Run
    progress: Progress
    elapsed_s: float
    faults: dict[str, int]
    rubric_note: str | None = None  # who judged the rubric rules, or why no one did


class NothingAccepted(DistillError):
    """Not one planned conversation passed the checks."""


def generate(
    opts: GenerateOptions,
    *,
    backend: Backend | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    plan: list[PlanPoint] | None = None,
    into: Run | None = None,
) -> GenerateResult:
    """Run (or resume) generation into outputs/<name>/ until --n conversations pass.
    `backend` overrides the teacher string (tests pass a FakeBackend). Nothing is created,
    and the current run stays as it was, until every check before the first call passes.
    `plan` replaces the planned points (`distill improve` plans its own, up to PLAN_LIMIT x n
    in the order to try them) and `into` is a folder to write them to that does not become
    the current run."""
    opts.validate()
    opts = opts.resolved()
    assert opts.n is not None and opts.teacher is not None
    spec = opts.load_style()
    seeds = load_seeds(opts.seeds)
    prompts = load_prompts(opts.prompts) if opts.prompts else None
    teacher = backend or get_backend(
        opts.teacher,
        base_url=opts.base_url,
        timeout=opts.timeout,
        price=opts.price(),
        rpm=opts.rpm,
        tpm=opts.tpm,
        batch_size=opts.concurrency if opts.is_local() else None,
        **opts.backend_opts,
    )
    if opts.max_budget is not None and teacher.price is None:
        raise UsageError(
            f"--max-budget needs the teacher's price and the price table has none for "
            f"{teacher.ref}; pass --price-in and --price-out (USD per million prompt and "
            "completion tokens), or set price-in and price-out under [generate] in distill.toml"
        )
    _check_same_plan(into or Run((opts.outputs or runs.OUTPUTS) / opts.run_name()), opts)
    if into is not None:
        run = Run.at(into.path)
    else:
        run = Run.create(opts.run_name(), outputs=opts.outputs)  # now the current run
    _record_inputs(run, opts, str(teacher.ref))
    if opts.batch:  # plan points through OpenAI's Batch API (batch.py)
        teacher = batched(teacher, run)
    calls = CallLog(run.file("calls.sqlite"))
    try:
        most = PLAN_LIMIT * opts.n
        if plan is not None:
            plan = plan[:most]
        elif prompts is not None:  # the customer side is given: one point per message
            plan = plan_from_prompts(prompts, most, opts.seed)
        else:
            axes, source = plan_axes(spec, seeds, teacher, calls, run.manifest.get("axes"))
            plan = make_plan(axes, most, opts.seed)
            run.update_manifest(axes={**axes.model_dump(), "source": source})
        run.update_manifest(plan=[p.to_dict() for p in plan[: opts.n]])
        rubric, note = _rubric_judge(opts, spec, teacher, calls)
        result = _write_plan(
            run, opts, spec, seeds, plan, teacher, calls, on_progress, prompts, rubric
        )
        result.rubric_note = note
        return result
    finally:
        calls.close()


def _rubric_judge(
    opts: GenerateOptions, spec: StyleSpec, teacher: Backend, calls: CallLog
) -> tuple[RubricJudge | None, str | None]:
    """The judge of the spec's rubric rules and a line on who judges them (or why no one)."""
    if not spec.rubrics:
        return None, None
    judge = opts.judge or str(teacher.ref)
    if judge.strip().lower() in ("none", "off"):
        return None, skipped_line(spec, "turned off with --judge none")
    if (why := unusable(judge)) is not None:
        return None, skipped_line(spec, why)
    same = opts.judge is None or judge == opts.teacher or judge == str(teacher.ref)
    backend = teacher if same else get_backend(judge, timeout=opts.timeout)
    names = ", ".join(r.name for r in spec.rubrics)
    return RubricJudge(spec, backend, calls, STAGE), f"rubric rules ({names}) judged by {judge}"


def _write_plan(
    run: Run,
    opts: GenerateOptions,
    spec: StyleSpec,
    seeds: list[Seed],
    plan: list[PlanPoint],
    backend: Backend,
    calls: CallLog,
    on_progress: Callable[[Progress], None] | None,
    prompts: list[CustomerPrompt] | None = None,
    rubric: RubricJudge | None = None,
) -> GenerateResult:
    """Write chats at the plan's points, in order, until --n pass (see Worker.run)."""
    done = done_so_far(run)
    spent = calls.totals(STAGE)
    progress = Progress(
        total=min(opts.n or 0, len(plan)),  # --prompts may give fewer messages than --n
        generated=len(done.generated),
        rejected=len(done.rejected),
        tokens=int(spent["prompt_tokens"] + spent["completion_tokens"]),
        cost_usd=spent["cost_usd"],
    )
    budget = Budget(opts.max_budget, spent["cost_usd"], backend.price)
    teacher = Teacher(backend, calls, budget, progress, opts.temperature, rubric)
    pattern = reply_pattern(spec, seeds) if opts.is_local() else None
    types = ConversationTypes(spec, topic_check=bool(opts.topic_check), reply_pattern=pattern)
    reasks = opts.max_reasks
    chat: WholeChat | RolePlay | Answer
    if prompts is not None:
        chat = Answer(spec, prompts, teacher, types, reasks=reasks, seed=opts.seed)
    elif opts.roleplay:
        chat = RolePlay(spec, teacher, types, reasks=reasks, seed=opts.seed)
    else:
        chat = WholeChat(
            spec,
            seeds,
            teacher,
            types,
            examples=opts.examples or 0,
            reasks=reasks,
            seed=opts.seed,
            shared=not opts.is_local(),  # one prefix for every request: prompt caching
        )
    worker = Worker(run, spec, str(backend.ref), progress, done.ids, on_progress)
    todo = (p for p in plan if p.plan_index not in done)

    async def work() -> None:
        try:
            await worker.run(chat.write, todo, opts.concurrency or LOCAL_BATCH)
        finally:
            await close_backend(backend)
            if rubric is not None and rubric.backend is not backend:
                await close_backend(rubric.backend)

    run.record_stage(STAGE, "running", planned=progress.planned, teacher=str(backend.ref))
    if on_progress:
        on_progress(progress)
    t0 = time.perf_counter()
    status = "interrupted"
    try:
        asyncio.run(work())
        status = "stopped-budget" if worker.out_of_budget else "done"
        if not progress.generated and not worker.out_of_budget:
            status = "failed"
    except BackendError:
        status = "failed"
        raise
    finally:
        elapsed = time.perf_counter() - t0
        faults = dict(getattr(backend, "faults", {}) or {})
        last = max([worker.last_planned, *done.generated, *done.rejected])
        run.update_manifest(plan=[p.to_dict() for p in plan[: max(progress.total, last + 1)]])
        run.record_stage(
            STAGE,
            status,
            planned=progress.planned,
            counts={
                "wanted": progress.total,
                "planned": progress.planned,
                "generated": progress.generated,
                "rejected": progress.rejected,
                "remaining": max(0, progress.total - progress.generated),
            },
            usage={
                **(totals := calls.totals(STAGE)),
                "cached_share": round(totals["cached_tokens"] / (totals["prompt_tokens"] or 1), 4),
                "reasks_this_session": progress.reasks,
                "calls_this_session": progress.calls,
                "cached_this_session": progress.cached,
            },
            cost_usd=round(progress.cost_usd, 6),
            teacher=str(backend.ref),
            elapsed_s=round(elapsed, 2),
            transient_faults=faults,
            **(backend.manifest_entry() if isinstance(backend, BatchTeacher) else {}),
        )
    if worker.out_of_budget:
        raise BudgetExceeded(
            f"--max-budget ${opts.max_budget:g} reached: spent ${progress.cost_usd:.4f}, "
            f"{progress.generated} of {progress.total} accepted; raise --max-budget and rerun "
            "to continue"
        )
    if not progress.generated:
        raise NothingAccepted(_nothing_passed(run, progress))
    return GenerateResult(run, progress, elapsed, faults)


def _nothing_passed(run: Run, progress: Progress) -> str:
    reasons = "; ".join(f"{r} ({n})" for r, n in reject_reasons(run, 3)) or "none recorded"
    return (
        f"none of the {progress.planned} planned conversations passed the checks (top reasons: "
        f"{reasons}); read {run.file('rejected.jsonl')}, then fix the seeds or the style "
        "spec's rules, or use a stronger --teacher"
    )


def _record_inputs(run: Run, opts: GenerateOptions, teacher: str) -> None:
    style = opts.style_path()
    run.update_manifest(
        inputs={
            "seeds": {"path": str(opts.seeds.resolve()), "sha256": sha256_file(opts.seeds)},
            "style": {"path": str(style.resolve()), "sha256": sha256_file(style)},
            "prompts": prompt_hashes(),
            **(
                {
                    "customers": {
                        "path": str(opts.prompts.resolve()),
                        "sha256": sha256_file(opts.prompts),
                    }
                }
                if opts.prompts
                else {}
            ),
        },
        config={
            "teacher": teacher,
            "generate": {
                **recorded(opts),
                "teacher": teacher,
                "style_sha256": sha256_file(style),
            },
        },
    )


def _check_same_plan(run: Run, opts: GenerateOptions) -> None:
    """Resuming with another --seed or style would mix two plans in one run folder."""
    if not run.manifest_path.exists():
        return
    prev = run.manifest.get("config", {}).get("generate")
    started = run.file("generated.jsonl").exists() or run.file("rejected.jsonl").exists()
    if not prev or not started:
        return
    if prev.get("seed") != opts.seed:
        raise RunError(
            f"{run.path} was generated with --seed {prev.get('seed')}; rerun with that seed, "
            "or pass --name NEW for a new run"
        )
    if prev.get("style_sha256") not in (None, sha256_file(opts.style_path())):
        raise RunError(
            f"{run.path} was generated with another version of {opts.style_path()}; pass "
            "--name NEW for a new run (or restore the style spec)"
        )
