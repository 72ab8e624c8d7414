"""One improve round: read the last eval, rank the plan cells by how badly the student does
there, have the run's teacher write new examples weighted toward the weakest cells, keep those
that are new to the run (and not close to a held-out example), add them to train only, retrain
and re-evaluate on the same frozen eval set; with `control`, the same number of examples spread
as they come trains a second student beside it, so targeting is compared with just adding data.

Each step's result is written to improve/round-N/round.json before the next starts, and every
model call goes through a calls.sqlite, so a round killed at any moment resumes where it was
without repeating a finished call.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from distill.backends.base import Backend
from distill.errors import DistillError, InputError, RunError, UsageError
from distill.evaluation.scoring import AXES
from distill.rejections import drop_stage_rejections
from distill.runs import Run, append_jsonl, atomic_write_json, atomic_write_jsonl, read_jsonl
from distill.stages.improve import compare
from distill.stages.improve.cells import axes_with_cells, held_out_rows, rank_cells, train_counts
from distill.stages.improve.fresh import STAGE, keep_fresh
from distill.stages.improve.planning import candidates, targeted, uniform

ADDED = "improve.jsonl"  # every round's additions, train only (split puts them back in train)


@dataclass
class ImproveOptions:
    n: int | None = None  # new examples to add (default: half the training set, at least 20)
    axis: str = "topic"  # the plan axis whose cells are ranked and targeted
    cells: int = 3  # how many of the weakest cells to target
    control: bool = False  # also train a student on as many examples spread uniformly
    max_budget: float | None = None  # USD for the round's teacher calls (both branches)
    probe_size: int | None = None  # eval's (default: what the last eval asked)
    yes: bool = False  # a hosted fine-tune's confirmation


Say = Callable[[str], None]


def rounds_done(run: Run) -> int:
    return len((run.manifest.get("improve") or {}).get("rounds") or [])


def improve_round(
    run: Run,
    opts: ImproveOptions,
    *,
    backend: Backend | None = None,
    say: Say = print,
    generate_progress: Callable[[Any], None] | None = None,
    eval_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the next round; returns its report (also in round-N/report.json and in
    the manifest's improve.rounds). `backend` replaces the teacher (tests)."""
    if opts.axis not in AXES:
        raise UsageError(f"--axis {opts.axis}: expected one of {', '.join(AXES)}")
    if opts.cells < 1:
        raise UsageError("--cells must be at least 1")
    if opts.n is not None and opts.n < 1:
        raise UsageError("--n must be at least 1")
    student = (run.manifest.get("student") or {}).get("model")
    if not student:
        raise RunError(f"{run.path}: no trained student yet; run `distill train` first")
    round_no = rounds_done(run) + 1
    folder = run.path / "improve" / f"round-{round_no}"
    state_path = folder / "round.json"
    state: dict[str, Any] = _read_json(state_path) or {"round": round_no, "options": _opts(opts)}
    if state.get("options") != _opts(opts):
        raise UsageError(
            f"{folder} was started with other options ({_flags(state['options'])}); rerun with "
            f"those to finish it, or delete {folder} to start the round again"
        )

    def save() -> None:
        atomic_write_json(state_path, state)

    gen_opts = _generate_options(run)
    spec = gen_opts.load_style()
    eval_args = _eval_args(run, opts)
    base_student = (run.manifest.get("student") or {}).get("base")
    if not base_student:
        raise RunError(f"{run.manifest_path}: the student's base model is not recorded; retrain")
    hp = _train_options(run, opts)

    # the cells come from the held-out examples' plan points: check them before any call
    _check_axis(run, opts.axis, [{"meta": r.get("meta") or {}} for r in _ids(run, "eval")])
    folder.mkdir(parents=True, exist_ok=True)

    # 1. before: the current student on the frozen eval set (answered from calls.sqlite when
    #    `distill eval` already ran with these settings)
    if "before" not in state:
        say(f"round {round_no}: evaluating the current student ({student})")
        report = _evaluate(run, eval_args, eval_progress)
        _keep_eval(run, report, folder / "before")
        state["before"] = _summary(report)
        state["student_before"] = student
        save()

    # 2. the plan: the weakest cells, and the points that target them
    if "plan" not in state:
        rows = held_out_rows(list(read_jsonl(folder / "before" / "results.jsonl")))
        _check_axis(run, opts.axis, rows)
        cells = rank_cells(rows, train_counts(run)[opts.axis], opts.axis)
        weak = [c for c in cells if c.priority > 0][: opts.cells]
        if not weak:
            raise DistillError(
                f"nothing to improve: the student passes the style spec on all {len(rows)} "
                f"held-out examples ({student}); hold out more (`distill split --eval-size`) "
                "to find where it is weak"
            )
        n = opts.n or max(20, _count(run.file("train.jsonl")) // 2)
        earlier = [Run(p.parent).manifest.get("plan") or [] for p in _earlier_rounds(run, round_no)]
        pool = candidates(
            run,
            spec,
            axis=opts.axis,
            wanted=3 * n,
            seed=gen_opts.seed,
            round_no=round_no,
            earlier=earlier,
        )
        plan = targeted(pool, weak, 3 * n)
        if not plan:
            raise InputError(
                f"no unused candidates in the weakest {opts.axis} cells "
                f"({', '.join(c.value for c in weak)}): every customer message there is "
                "answered or held out; add more to the prompts file, or pass --cells to widen"
            )
        state.update(
            n=n,
            cells=[c.to_dict() for c in cells],
            targets=[c.value for c in weak],
            plan=[p.to_dict() for p in plan],
            control_pool=[p.to_dict() for p in uniform(pool, 3 * n)],
        )
        save()
        say(
            f"round {round_no}: weakest {opts.axis} cells "
            + "; ".join(
                f"{c.value} ({c.failed}/{c.held_out} failed, {c.train} in train)" for c in weak
            )
            + f"; asking the teacher for {n} new examples there"
            + (
                ""
                if len(plan) >= n
                else f" (only {len(plan)} unused candidates there: customer messages neither "
                "answered nor held out; add more to the prompts file for more)"
            )
        )

    # 3. generate where the student is weak; keep what is new to the run
    if "added" not in state:
        got = _generate(
            run,
            gen_opts,
            folder / "targeted",
            state["plan"],
            state["n"],
            opts,
            backend,
            generate_progress,
            spent=0.0,
        )
        kept = _fresh(run, gen_opts, got, round_no, "targeted")
        atomic_write_jsonl(folder / "targeted" / "added.jsonl", kept)
        state["added"] = len(kept)
        state["generated"] = len(got)
        save()
        say(
            f"round {round_no}: {len(got)} generated, {len(kept)} new to the run "
            f"(the rest in {run.file('rejected.jsonl')}, stage improve)"
        )
    if not state["added"]:
        raise DistillError(
            f"round {round_no}: none of the {state['generated']} new examples was new to the "
            f"run (reasons in {run.file('rejected.jsonl')}); nothing to train on. Delete "
            f"{folder} and rerun with other cells (--cells, --axis) or more customer messages"
        )

    # 4. the control: as many examples spread as they come, a student of its own
    if opts.control and "control" not in state:
        control = Run.at(folder / "control")
        if not control.file("added.jsonl").exists():
            spent = _spent(folder / "targeted")
            got = _generate(
                run,
                gen_opts,
                control.path,
                state["control_pool"],
                state["added"],
                opts,
                backend,
                generate_progress,
                spent=spent,
            )
            kept = _fresh(run, gen_opts, got, round_no, "control")[: state["added"]]
            _control_split(run, control, kept)
            atomic_write_jsonl(control.file("added.jsonl"), kept)
        say(f"round {round_no}: training the control student (examples spread uniformly)")
        _train(control, base_student, hp, say)
        report = _evaluate(control, eval_args, eval_progress)
        _keep_eval(control, report, folder / "control")
        state["control"] = {**_summary(report), "added": _count(control.file("added.jsonl"))}
        save()

    # 5. the round itself: add to train only, retrain, evaluate on the same eval set
    if "after" not in state:
        _add_to_train(run, list(read_jsonl(folder / "targeted" / "added.jsonl")))
        say(f"round {round_no}: retraining on {_count(run.file('train.jsonl'))} examples")
        _train(run, base_student, hp, say)
        report = _evaluate(run, eval_args, eval_progress)
        _keep_eval(run, report, folder / "after")
        state["after"] = _summary(report)
        save()

    # 6. before vs after (vs control), per cell, targeted cells vs the rest
    result = compare.round_report(folder, state, opts.axis)
    atomic_write_json(folder / "report.json", result)
    record = {
        "round": round_no,
        "folder": str(folder),
        "axis": opts.axis,
        "targets": state["targets"],
        "generated": state["generated"],
        "added": state["added"],
        "control": opts.control,
        "spend_usd": round(_spent(folder / "targeted") + _spent(folder / "control"), 6),
        "before": state["before"],
        "after": state["after"],
        "control_eval": state.get("control"),
        "headline": result["headline"],
    }
    rounds = (run.manifest.get("improve") or {}).get("rounds") or []
    run.update_manifest(improve={"rounds": [*rounds, record]})
    state["status"] = "done"
    save()
    return result


# -- steps --------------------------------------------------------------------------------


def _ids(run: Run, split: str) -> list[dict[str, Any]]:
    path = run.file(f"{split}_ids.jsonl")
    if not path.exists():
        raise RunError(f"{path}: missing; run `distill split` (it writes the plan points)")
    return list(read_jsonl(path))


def _check_axis(run: Run, axis: str, rows: list[dict[str, Any]]) -> None:
    if axis in axes_with_cells(rows):
        return
    found = axes_with_cells(rows)
    what = (
        f"pass --axis with one of: {', '.join(found)}"
        if found
        else "they carry no plan point (meta topic, persona, intent, turns), as examples from "
        "`distill generate` do"
    )
    raise InputError(
        f"{run.file('eval_ids.jsonl')}: the held-out examples record fewer than two values of "
        f"{axis}, so there are no cells to rank; {what}"
    )


def _generate(
    run: Run,
    gen_opts: Any,
    where: Path,
    plan: list[dict[str, Any]],
    n: int,
    opts: ImproveOptions,
    backend: Backend | None,
    on_progress: Callable[[Any], None] | None,
    spent: float,
) -> list[dict[str, Any]]:
    """The branch's accepted examples (generate resumes a killed one from its files)."""
    from dataclasses import replace

    from distill.stages.generate import NothingAccepted, PlanPoint, generate

    budget = None if opts.max_budget is None else opts.max_budget - spent
    if budget is not None and budget <= 0:
        raise DistillError(
            f"--max-budget ${opts.max_budget:g} is spent (${spent:.4f}); raise it to go on"
        )
    points = [PlanPoint(**p) for p in plan]
    try:
        generate(
            replace(gen_opts, n=n, max_budget=budget),
            backend=backend,
            on_progress=on_progress,
            plan=points,
            into=Run.at(where),
        )
    except NothingAccepted as e:
        raise DistillError(f"improve: {e}") from None
    return list(read_jsonl(where / "generated.jsonl"))


def _fresh(
    run: Run, gen_opts: Any, got: list[dict[str, Any]], round_no: int, branch: str
) -> list[dict[str, Any]]:
    """The new examples that are new to the run; the others to rejected.jsonl with why."""
    threshold = float(run.stage("dedupe").get("threshold") or 0.8)
    marked = [
        {**rec, "meta": {**(rec.get("meta") or {}), "source": STAGE, "round": round_no}}
        for rec in got
    ]
    kept, rejected = keep_fresh(run, marked, seeds=gen_opts.seeds, threshold=threshold)
    prefix = f"round {round_no} {branch}: "
    drop_stage_rejections(run, STAGE, prefix)
    run.reject((rec, stage, prefix + why) for rec, stage, why in rejected)
    return kept


def _add_to_train(run: Run, added: list[dict[str, Any]]) -> None:
    """Append the additions to improve.jsonl, train_ids.jsonl and train.jsonl, each only
    where it is not there yet (a rerun after a kill between two files adds nothing twice)."""
    from distill.stages.review import apply_decisions, load_decisions

    have = {r.get("id") for r in read_jsonl(run.file(ADDED))} if run.file(ADDED).exists() else set()
    append_jsonl(run.file(ADDED), [r for r in added if r["id"] not in have])
    kept, _ = apply_decisions(added, load_decisions(run))
    ids_path = run.file("train_ids.jsonl")
    ids = [r.get("id") for r in read_jsonl(ids_path)]
    lines = _count(run.file("train.jsonl"))
    fresh = [r for r in kept if r["id"] not in set(ids)]
    append_jsonl(ids_path, [{"id": r["id"], "meta": r.get("meta", {})} for r in fresh])
    if lines < len(ids) + len(fresh):  # train.jsonl lacks the last ids' lines
        missing = (ids + [r["id"] for r in fresh])[lines:]
        by_id = {r["id"]: r for r in kept}
        append_jsonl(
            run.file("train.jsonl"),
            [{"messages": by_id[i]["messages"]} for i in missing if i in by_id],
        )


def _control_split(run: Run, control: Run, added: list[dict[str, Any]]) -> None:
    """The control run's files: this run's train (as the review gate has it) plus the control
    additions, the same eval set, and the manifest entries eval reads (style, teacher)."""
    from distill.stages.review_gate import review_gate

    gate = review_gate(run)
    if gate is None:
        raise RunError(f"{run.file('train.jsonl')}: missing; run `distill split` first")
    train = [*gate.rows["train"], *added]
    atomic_write_jsonl(
        control.file("train_ids.jsonl"), ({"id": r["id"], "meta": r.get("meta", {})} for r in train)
    )
    atomic_write_jsonl(control.file("train.jsonl"), ({"messages": r["messages"]} for r in train))
    for name in ("eval.jsonl", "eval_ids.jsonl"):
        shutil.copyfile(run.file(name), control.file(name))
    m = run.manifest
    control.update_manifest(inputs=m.get("inputs") or {}, config=m.get("config") or {})


def _train(run: Run, student: str, hp: dict[str, Any], say: Say) -> None:
    from distill.stages.pipeline import train_student

    train_student(run, student, say=say, **hp)


def _evaluate(
    run: Run, args: dict[str, Any], progress: Callable[[int, int], None] | None
) -> dict[str, Any]:
    from distill.stages.evaluate import evaluate

    return evaluate(run, progress=progress, **args)


def _keep_eval(run: Run, report: dict[str, Any], where: Path) -> None:
    """A copy of an eval's report and results (the next training overwrites eval/<student>/)."""
    src = Path(report["folder"])
    where.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "results.jsonl", "report.html"):
        if (src / name).exists():
            shutil.copyfile(src / name, where / name)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    m = report["metrics"]
    return {
        "student": report["student"],
        "examples": report["examples"],
        "style": m.get("style"),
        "probe": {k: m["probe"].get(k) for k in ("student", "base", "drop")}
        if "skipped" not in m.get("probe", {})
        else m.get("probe"),
        "verdict": report["verdict"],
    }


# -- what the run recorded ------------------------------------------------------------------


def _generate_options(run: Run) -> Any:
    """generate's options as the run recorded them (the same teacher, seeds, spec and seed)."""
    from distill.stages.generate import GenerateOptions

    m = run.manifest
    recorded = (m.get("config") or {}).get("generate")
    inputs = m.get("inputs") or {}
    seeds = (inputs.get("seeds") or {}).get("path")
    if not recorded or not seeds:
        raise RunError(
            f"{run.manifest_path}: this run was not made by `distill generate` (no teacher or "
            "seeds recorded), so improve has no teacher to ask; generate a run first"
        )
    known = {f.name for f in fields(GenerateOptions)}
    kept = {k: v for k, v in recorded.items() if k in known}
    style = (inputs.get("style") or {}).get("path")
    prompts = (inputs.get("customers") or {}).get("path")
    for label, path in (("seeds", seeds), ("style spec", style)):
        if path and not Path(path).exists():
            raise InputError(
                f"{path}: the {label} this run was generated from is missing; restore it"
            )
    return GenerateOptions(
        **{**kept, "seeds": Path(seeds), "style": Path(style) if style else None},
        prompts=Path(prompts) if prompts else None,
    )


def _eval_args(run: Run, opts: ImproveOptions) -> dict[str, Any]:
    """The last eval's settings, so before and after are asked the same questions."""
    last = run.stage("eval")
    probe = opts.probe_size if opts.probe_size is not None else last.get("probe_items")
    return {"judge": last.get("judge") or None, "probe_size": probe or None}


def _train_options(run: Run, opts: ImproveOptions) -> dict[str, Any]:
    """The last training's settings, so after and control train the same way."""
    from distill.lora.config import LocalTrainConfig

    hp = dict(run.stage("train").get("hyperparameters") or {})
    known = {f.name for f in fields(LocalTrainConfig)} - {"base"}
    out = {k: v for k, v in hp.items() if k in known}
    if opts.yes:
        out["yes"] = True
    return out


def _spent(folder: Path) -> float:
    """The teacher's spend in a branch folder so far (its calls.sqlite)."""
    if not (folder / "calls.sqlite").exists():
        return 0.0
    from distill.calls import CallLog

    log = CallLog(folder / "calls.sqlite")
    try:
        return float(log.totals("generate")["cost_usd"])
    finally:
        log.close()


def _earlier_rounds(run: Run, round_no: int) -> list[Path]:
    """Earlier rounds' targeted branches (their examples are in train; the control's are not)."""
    return [
        p
        for k in range(1, round_no)
        if (p := run.path / "improve" / f"round-{k}" / "targeted" / "manifest.json").exists()
    ]


def _count(path: Path) -> int:
    return sum(1 for _ in read_jsonl(path)) if path.exists() else 0


def _read_json(path: Path) -> Any:
    import json

    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: unreadable ({e}); delete it to start the round again") from None


def _opts(opts: ImproveOptions) -> dict[str, Any]:
    return {
        "n": opts.n,
        "axis": opts.axis,
        "cells": opts.cells,
        "control": opts.control,
        "probe_size": opts.probe_size,
    }


def _flags(recorded: dict[str, Any]) -> str:
    return " ".join(
        f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else (f"--{k}" if v else "")
        for k, v in recorded.items()
        if v is not None and v is not False
    )
