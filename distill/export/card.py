"""The dataset card of `distill export --format hf`: README.md with the YAML header the Hugging
Face Hub reads (configs, splits and sizes, task, language, license), then how the data was made,
from the run's manifest, rejected.jsonl, dedupe_report.json and split_report.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.errors import DistillError
from distill.runs import Run
from distill.stages.review_gate import ReviewGate

SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
)


def dataset_card(
    run: Run,
    splits: dict[str, list[dict[str, Any]]],
    gate: ReviewGate,
    license: str,
    files: dict[str, Path],
    sizes: dict[str, int],
) -> str:
    """README.md for the folder; `sizes` are the splits' bytes in memory (Arrow, estimated)."""
    facts = provenance(run, gate)
    total = sum(len(r) for r in splits.values())
    size = next((c for limit, c in SIZE_CATEGORIES if total < limit), "1M<n<10M")
    header: list[str] = [
        "---",
        f"license: {_q(license)}",
        *(["language:", f"- {_q(facts['language'])}"] if facts["language"] else []),
        "task_categories:",
        "- text-generation",
        "tags:",
        "- conversational",
        "- synthetic",
        "- distill",
        "size_categories:",
        f"- {_q(size)}",
        f"pretty_name: {_q(facts['name'])}",
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for s, path in files.items():
        header += [f"  - split: {s}", f"    path: {_q(f'{path.parent.name}/{s}-*.parquet')}"]
    header += ["dataset_info:", "  splits:"]
    for s, rows in splits.items():
        header += [
            f"  - name: {s}",
            f"    num_bytes: {sizes[s]}",
            f"    num_examples: {len(rows)}",
        ]
    header.append("---")
    return "\n".join(header) + "\n\n" + _body(facts, splits) + "\n"


def _q(text: str) -> str:
    """A YAML scalar: JSON's double-quoted strings are valid YAML."""
    return json.dumps(text, ensure_ascii=False)


def provenance(run: Run, gate: ReviewGate) -> dict[str, Any]:
    """What the card says about how the data was made, each figure from a run file."""
    from distill.evaluation.inputs import load_style
    from distill.export.dataset import rejected_by_reason
    from distill.stages.review import load_decisions

    m = run.manifest
    stages = m.get("stages", {})
    inputs = m.get("inputs", {})
    try:
        style = load_style(run)
    except DistillError:  # the card is still written without the spec's name and language
        style = None
    hashes = {
        what: inputs[key]["sha256"]
        for what, key in (
            ("seeds", "seeds"),
            ("style spec", "style"),
            ("customer messages", "customers"),
        )
        if isinstance(inputs.get(key), dict) and inputs[key].get("sha256")
    }
    report = _json(run.file("split_report.json"))
    leakage: dict[str, Any] = report.get("leakage") or {}
    jaccards = [
        v for v in (leakage.get("max_jaccard_to_train") or {}).values() if isinstance(v, float)
    ]
    decisions = load_decisions(run)
    reviewed: dict[str, int] = {}
    for d in decisions.values():
        reviewed[d["decision"]] = reviewed.get(d["decision"], 0) + 1
    evaluation = stages.get("eval") if stages.get("eval", {}).get("status") == "done" else None
    return {
        "name": style.name if style else run.name,
        "description": style.description if style else "",
        "system_prompt": style.system_prompt if style else None,
        "language": style.quality.language if style else "",
        "teacher": m.get("config", {}).get("teacher") or stages.get("generate", {}).get("teacher"),
        "source": m.get("config", {}).get("source", "generate"),
        "hashes": hashes,
        "generate": stages.get("generate", {}).get("counts", {}),
        "dedupe": stages.get("dedupe", {}),
        "rejected": rejected_by_reason(run, gate),
        "reviewed": reviewed,
        "split": report.get("counts", {}),
        "leakage": {
            "threshold": leakage.get("threshold"),
            "above": leakage.get("count_above_threshold"),
            "max": max(jaccards) if jaccards else None,
        },
        "eval": evaluation,
    }


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _body(f: dict[str, Any], splits: dict[str, list[dict[str, Any]]]) -> str:
    n = {s: len(r) for s, r in splits.items()}
    lines = [f"# {f['name']}", ""]
    if f["description"]:
        lines += [f["description"].strip(), ""]
    lines += [
        "Chat conversations in OpenAI's fine-tuning format (`messages`: role, content), made "
        "with distill and exported with `distill export --format hf`. "
        f"`train` ({n.get('train', 0)} examples) is what the student was trained on; `test` "
        f"({n.get('test', 0)}) is the held-out eval split, which shares no near-duplicate with "
        "train.",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("path/to/this/folder")  # or load_dataset("parquet", data_dir=".../data")',
        "```",
        "",
        "Columns: `id` (a hash of the messages), `messages`, and the metadata of each example: "
        "`topic`, `persona`, `intent` (the generation plan), `turns`, `source` (generate, seed "
        "or import), `teacher`, `review` (the reviewer's decision: accept, edit, or empty when "
        "not reviewed).",
        "",
        "## How the data was made",
        "",
    ]
    if f["source"] == "import":
        lines.append("- Imported with `distill import` from existing conversations.")
    elif f["teacher"]:
        lines.append(f"- Teacher: `{f['teacher']}`.")
    if f["system_prompt"]:
        lines.append(f"- System prompt (from the style spec): {f['system_prompt']!r}.")
    for what, digest in f["hashes"].items():
        lines.append(f"- {what} sha256: `{digest}`")
    g = f["generate"]
    if g:
        lines.append(
            f"- Generated: {g.get('generated', 0)} accepted of {g.get('planned', 0)} planned "
            f"({g.get('wanted', 0)} wanted)."
        )
    d = f["dedupe"]
    if d.get("status") == "done":
        lines.append(
            f"- Deduplicated (MinHash LSH, Jaccard >= {d.get('threshold')}): {d.get('input')} "
            f"examples and {d.get('seeds')} seeds in, {d.get('removed')} removed "
            f"({d.get('exact')} exact, {d.get('near')} near duplicates, {d.get('seed_copies')} "
            f"copies of seeds), {d.get('kept')} kept."
        )
    rejected = f["rejected"]
    if rejected:
        lines.append(f"- Rejected, by stage and reason ({sum(rejected.values())} in all):")
        lines += [f"  - {why}: {k}" for why, k in rejected.most_common()]
    else:
        lines.append("- Rejected: none.")
    r = f["reviewed"]
    if r:
        lines.append(
            f"- Reviewed by a person: {sum(r.values())} decisions ("
            + ", ".join(f"{k} {v}" for k, v in sorted(r.items()))
            + "); rejected examples are not in this dataset, edited ones are as edited."
        )
    else:
        lines.append("- Reviewed by a person: no (no review decisions in the run).")
    leak = f["leakage"]
    if leak["threshold"] is not None:
        top = f"{leak['max']:.2f}" if leak["max"] is not None else "below the listing floor"
        lines.append(
            f"- Leakage check: {leak['above']} test examples with Jaccard >= {leak['threshold']} "
            f"to any train example; the highest is {top}."
        )
    e = f["eval"]
    if e:
        lines.append(
            f"- Eval of the student `{e.get('student')}` against `{e.get('base')}` on "
            f"{e.get('examples')} held-out examples: {e.get('verdict') or e.get('outcome')}"
        )
    else:
        lines.append("- Eval: not run.")
    return "\n".join(lines)
