"""Does distillation work on teacher-quality data? Runs the path a user with data of their own
takes, from the CLI, and prints the table the README quotes:

    distill import DATA --style STYLE  ->  dedupe  ->  split --eval-size E  ->
    train --student local:smollm2-135m (default settings)  ->  eval (the whole probe)

    python benchmarks/evidence.py benchmarks/data/greenleaf_teacher.jsonl
    python benchmarks/evidence.py DATA.jsonl --style my.style.toml --eval-size 40 -- --epochs 2

Arguments after `--` go to `distill train`. Everything lands in a fresh folder (--work, default
a temporary one) so nothing in ./outputs is touched. Targets (issue: evidence): style pass rate
student - base >= +70 points with the 95% CI's lower bound above +50, and the general-skills
probe's drop under 5 points with a CI half-width of at most 5 points.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def distill(args: list[str], cwd: Path) -> float:
    """Run one distill command in `cwd`, streaming its output; return seconds taken."""
    exe = Path(sys.executable).with_name("distill")
    cmd = [str(exe) if exe.exists() else "distill", *args]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env={**os.environ, "DISTILL_DEBUG": ""})
    if done.returncode != 0:
        sys.exit(f"evidence: `{' '.join(args)}` failed with exit code {done.returncode}")
    return time.perf_counter() - t


def pts(e: dict) -> str:
    return f"{100 * e['mean']:+.0f} pts (CI {100 * e['lo']:+.0f}..{100 * e['hi']:+.0f})"


def pct(e: dict) -> str:
    return f"{100 * e['mean']:.0f}% (CI {100 * e['lo']:.0f}..{100 * e['hi']:.0f}%)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--style", type=Path, default=ROOT / "seeds" / "greenleaf.style.toml")
    ap.add_argument("--eval-size", default="40")
    ap.add_argument("--student", default="local:smollm2-135m")
    ap.add_argument("--probe-size", type=int, default=None, help="default: the whole probe")
    ap.add_argument("--work", type=Path, default=None, help="folder for the run (default: temp)")
    ap.add_argument("train_args", nargs="*", help="after --: extra `distill train` flags")
    a = ap.parse_args()

    work = a.work or Path(tempfile.mkdtemp(prefix="distill-evidence-"))
    work.mkdir(parents=True, exist_ok=True)
    data, style = a.data.resolve(), a.style.resolve()
    times = {
        "import": distill(["import", str(data), "--style", str(style), "--name", "evidence"], work),
        "dedupe": distill(["dedupe"], work),
        "split": distill(["split", "--eval-size", a.eval_size], work),
        "train": distill(["train", "--student", a.student, "--yes", *a.train_args], work),
    }
    probe = ["--probe-size", str(a.probe_size)] if a.probe_size else []
    times["eval"] = distill(["eval", "--judge", "none", *probe], work)

    run = work / "outputs" / "evidence"
    manifest = json.loads((run / "manifest.json").read_text())
    report = json.loads((work / manifest["stages"]["eval"]["report"]).read_text())
    split = json.loads((run / "split_report.json").read_text())["counts"]
    m = report["metrics"]
    st, pr = m["style"], m["probe"]
    drop = pr["drop"]
    half = 100 * (drop["hi"] - drop["lo"]) / 2
    style_ok = st["diff"]["mean"] >= 0.70 and st["diff"]["lo"] > 0.50
    probe_ok = 100 * drop["mean"] < 5 and half <= 5
    rows = [
        ("data", f"{data.name}: train {split['train']}, held out {split['eval']}"),
        ("student", f"{report['student']} (base {report['base']})"),
        ("style pass rate: student", pct(st["student"])),
        ("style pass rate: base", pct(st["base"])),
        ("style pass rate: reference", pct(st["reference"])),
        (
            "style gain (student - base)",
            f"{pts(st['diff'])}  target >= +70, CI low > +50: {'met' if style_ok else 'NOT met'}",
        ),
        (
            "probe: student / base",
            f"{pct(pr['student'])} / {pct(pr['base'])} ({report['probe_items']} items)",
        ),
        (
            "probe drop (base - student)",
            f"{pts(drop)}, half-width {half:.1f} pts  target < 5 "
            f"pts, half-width <= 5: {'met' if probe_ok else 'NOT met'}",
        ),
    ]
    if "skipped" not in m["similarity"]:
        rows.append(
            ("similarity to reference: student - base", f"{m['similarity']['diff']['mean']:+.3f}")
        )
    if "skipped" not in m["copying"]:
        rows.append(("copies training text (student)", pct(m["copying"]["student"])))
    if "gap" in m["loss"]:
        lg = m["loss"]
        rows.append(
            (
                "loss: train / eval (gap)",
                f"{lg['train_loss']:.3f} / {lg['eval_loss']:.3f} ({lg['gap']:+.3f})",
            )
        )
    rows.append(
        ("minutes: " + ", ".join(times), ", ".join(f"{t / 60:.1f}" for t in times.values()))
    )
    rows.append(("headline", report["headline"]["text"]))
    width = max(len(k) for k, _ in rows)
    print("\n# evidence\n")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"\nrun folder: {run}")


if __name__ == "__main__":
    main()
