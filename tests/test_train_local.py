"""Local LoRA training on a tiny random Llama: labels, loss, outputs, reload, merge, resume."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from click.testing import CliRunner  # noqa: E402

from distill.cli import cli  # noqa: E402
from distill.runs import Run  # noqa: E402
from distill.stages import train_local as tl  # noqa: E402

SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."
ITEMS = ["fern", "cactus", "monstera", "orchid", "pothos", "snake plant", "bonsai", "ivy"]
ASKS = [
    ("My {p} order is late. Where is it?", "So sorry for the wait! Your {p} ships today."),
    ("How often do I water a {p}?", "Water your {p} once a week and keep it in bright light."),
]


def conversations(n: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + n):
        user, reply = ASKS[i % 2]
        p = ITEMS[(i // 2) % len(ITEMS)]
        out.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": user.format(p=p)},
                    {"role": "assistant", "content": reply.format(p=p)},
                ]
            }
        )
    return out


@pytest.fixture
def run_folder(make_run):
    """A run with train.jsonl (16, plus one with nothing to learn) and eval.jsonl (4)."""
    silent = conversations(1, 30)[0]
    silent["messages"][-1]["weight"] = 0
    train = conversations(16) + [silent]
    return make_run("shop", train__jsonl=train, eval__jsonl=conversations(4, 16))


FAST = ["--epochs", "3", "--lr", "1e-2", "--batch-tokens", "256", "--device", "cpu"]


def invoke(run: Run, model_dir, *extra: str):
    args = ["train", "--run", str(run.path), "--student", f"local:{model_dir}", *FAST, *extra]
    return CliRunner().invoke(cli, args)


def test_labels_cover_exactly_the_assistant_replies(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    msgs = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Where is my fern?"},
        {"role": "assistant", "content": "Sorry, it ships today.", "weight": 0},
        {"role": "user", "content": "And the cactus?"},
        {"role": "assistant", "content": "Tracking within the hour!"},
    ]
    ids, labels = tl.encode_conversation(tok, msgs)
    plain = [{k: v for k, v in m.items() if k != "weight"} for m in msgs]
    # the whole sequence is the template's rendering, token for token in text
    assert tok.decode(ids) == tok.apply_chat_template(plain, tokenize=False)
    supervised = [t for t, lab in zip(ids, labels, strict=True) if lab != tl.IGNORE]
    # only the weighted reply and its end token; the weight-0 reply, prompts, roles are masked
    assert tok.decode(supervised) == "Tracking within the hour!<|im_end|>"
    # the supervised tokens are one contiguous run
    first = labels.index(supervised[0])
    assert labels[first : first + len(supervised)] == supervised
    # without weight 0, both replies are supervised
    _, labels2 = tl.encode_conversation(tok, plain)
    both = [t for t, lab in zip(ids, labels2, strict=True) if lab != tl.IGNORE]
    assert tok.decode(both) == "Sorry, it ships today.<|im_end|>Tracking within the hour!<|im_end|>"


def test_labels_with_a_template_that_injects_a_system_prompt():
    """SmolLM2's own template adds a default system prompt when there is none."""
    from distill.local_model import cache_dir

    folder = cache_dir() / "models" / "smollm2-135m"
    if not (folder / "tokenizer.json").exists():
        pytest.skip("embedded SmolLM2 not converted yet")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"}]
    ids, labels = tl.encode_conversation(tok, msgs)
    assert "You are a helpful AI assistant named SmolLM" in tok.decode(ids)
    supervised = [t for t, lab in zip(ids, labels, strict=True) if lab != tl.IGNORE]
    assert tok.decode(supervised) == "Hello there!<|im_end|>"


def test_batches_fit_the_token_budget_and_cover_every_example_once():
    lengths = [5, 50, 7, 48, 30, 31, 6, 49, 12, 90]
    plan = tl.plan_epoch(lengths, batch_tokens=100, seed=1, epoch=0)
    assert sorted(i for step in plan for i in step) == list(range(len(lengths)))
    assert all(len(s) * max(lengths[i] for i in s) <= 100 for s in plan)
    assert plan == tl.plan_epoch(lengths, batch_tokens=100, seed=1, epoch=0)
    padded = sum(len(s) * max(lengths[i] for i in s) for s in plan)
    assert padded < 1.5 * sum(lengths)  # length grouping: little padding


def test_train_cli_writes_adapter_log_and_manifest(run_folder, tiny_model_dir):
    result = invoke(run_folder, tiny_model_dir)
    assert result.exit_code == 0, result.output
    out = run_folder.path / "train" / f"local-{tiny_model_dir.name}"
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [r["eval_loss"] for r in rows if r.get("eval_loss") is not None]
    steps = [r for r in rows if "tokens_per_s" in r]
    assert len(evals) == 4  # before training and after each of 3 epochs
    assert min(evals[1:]) < evals[0] - 0.15  # held-out loss falls
    assert steps[-1]["train_loss"] < steps[0]["train_loss"]
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1))
    assert all(r["tokens_per_s"] > 0 for r in steps)
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "adapter" / "tokenizer_config.json").exists()
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "Modelfile").exists()  # a working one comes with `distill export`
    assert f"distill export --format gguf --run {run_folder.path}" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["hyperparameters"]["lr"] == 1e-2
    assert config["hyperparameters"]["lora_r"] == 16
    assert config["hyperparameters"]["lora_alpha"] == 32
    stage = run_folder.stage("train")
    assert stage["status"] == "done"
    assert stage["student_model"] == f"local:{(out / 'adapter').resolve()}"
    assert stage["best_eval_loss"] == pytest.approx(min(evals[1:]), abs=1e-4)
    assert len(stage["adapter_sha256"]) == 64
    assert run_folder.manifest["student"]["model"] == stage["student_model"]
    assert not (out / "checkpoint").exists()
    rejected = [json.loads(x) for x in run_folder.file("rejected.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["reason"]) for r in rejected] == [
        ("train", "every assistant message has weight 0")
    ]

    # unchanged inputs: reported as done, not redone
    again = invoke(run_folder, tiny_model_dir)
    assert again.exit_code == 0, again.output
    assert "already trained" in again.output
    assert (out / "log.jsonl").read_text().count("\n") == len(rows)
    # --merge afterwards merges the saved adapter without training again
    merged = invoke(run_folder, tiny_model_dir, "--merge")
    assert merged.exit_code == 0, merged.output
    assert "already trained" in merged.output
    assert (out / "merged" / "config.json").exists()
    assert run_folder.stage("train")["merged"] == str((out / "merged").resolve())


def test_adapter_reload_and_merged_model_reproduce_the_trained_model(run_folder, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert invoke(run_folder, tiny_model_dir, "--merge").exit_code == 0
    out = run_folder.path / "train" / f"local-{tiny_model_dir.name}"
    stage = run_folder.stage("train")
    tok = AutoTokenizer.from_pretrained(str(out / "adapter"))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    reloaded = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    eval_data, _ = tl.encode_all(tok, [c["messages"] for c in conversations(4, 16)], 1024)
    precision = stage["hyperparameters"]["precision"]
    loss = tl.evaluate(reloaded, eval_data, 2048, tok.pad_token_id, "cpu", precision)
    assert loss == pytest.approx(stage["best_eval_loss"], abs=1e-5)

    merged = AutoModelForCausalLM.from_pretrained(stage["merged"]).eval()
    batch = tl.collate(eval_data, tok.pad_token_id, "cpu")
    with torch.no_grad():
        a = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = merged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        plain = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
        c = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, c, atol=1e-2)  # the adapter changed the model


class Killed(Exception):
    pass


def test_resume_after_a_kill_continues_from_the_checkpoint(make_run, tiny_model_dir):
    import torch
    from safetensors.torch import load_file

    def train(run, **extra):
        return tl.train_local(
            run,
            str(tiny_model_dir),
            epochs=2,
            lr=1e-2,
            batch_tokens=256,
            device="cpu",
            checkpoint_every=2,
            **extra,
        )

    files = {"train__jsonl": conversations(16), "eval__jsonl": conversations(4, 16)}
    straight = make_run("straight", **files)
    train(straight)

    def kill_at_step_5(row):
        if row["step"] == 5 and "train_loss" in row:
            raise Killed

    broken = make_run("broken", **files)
    with pytest.raises(Killed):
        train(broken, on_step=kill_at_step_5)
    out = broken.path / "train" / f"local-{tiny_model_dir.name}"
    assert (out / "checkpoint" / "state.pt").exists()
    assert not (out / "adapter").exists()
    saved = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
    assert saved["progress"]["step"] == 4  # the last checkpoint before the kill
    train(broken)
    steps = [
        json.loads(line)["step"]
        for line in (out / "log.jsonl").read_text().splitlines()
        if "lr" in line
    ]
    assert steps == list(range(1, len(steps) + 1))  # no step lost, none repeated

    a = load_file(straight.path / "train" / out.name / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert broken.stage("train")["best_eval_loss"] == pytest.approx(
        straight.stage("train")["best_eval_loss"], abs=1e-6
    )


def test_missing_split_files(make_run, tiny_model_dir):
    run = make_run("empty")
    result = CliRunner().invoke(
        cli, ["train", "--run", str(run.path), "--student", f"local:{tiny_model_dir}"]
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {run.path / 'train.jsonl'}: missing; run `distill split` first"
    )


def test_too_small_or_invalid_train_files_fail_before_the_model_loads(make_run, monkeypatch):
    monkeypatch.setattr(tl, "train_loop", lambda *a, **k: pytest.fail("training started"))
    small = make_run("small", train__jsonl=conversations(3), eval__jsonl=conversations(2))
    result = CliRunner().invoke(cli, ["train", "--run", str(small.path), "--student", "local:/x"])
    assert result.exit_code == 1
    assert "train.jsonl" in result.output and "10" in result.output
    assert len(result.output.strip().splitlines()) == 1

    rows = conversations(12)
    rows[6] = {"messages": [{"role": "user", "content": "no reply here"}]}
    bad = make_run("bad", train__jsonl=rows, eval__jsonl=conversations(2))
    result = CliRunner().invoke(cli, ["train", "--run", str(bad.path), "--student", "local:/x"])
    assert result.exit_code == 1
    assert f"{bad.path / 'train.jsonl'}:7:" in result.output
    assert "assistant" in result.output


def test_missing_model_path_and_missing_torch(run_folder, monkeypatch, tmp_path):
    result = CliRunner().invoke(
        cli, ["train", "--run", str(run_folder.path), "--student", f"local:{tmp_path / 'nope'}"]
    )
    assert result.exit_code == 2
    assert "neither an embedded model" in result.output

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "peft", None)
    result = CliRunner().invoke(
        cli, ["train", "--run", str(run_folder.path), "--student", f"local:{folder}"]
    )
    assert result.exit_code == 1
    assert "pip install 'distill[local]'" in result.output


def test_student_slug():
    assert tl.student_slug("smollm2-135m") == "local-smollm2-135m"
    assert tl.student_slug("/models/My Model/") == "local-my-model"


def test_epochs_follow_openais_rule():
    assert tl.default_epochs(40) == 3
    assert tl.default_epochs(20) == 5
    assert tl.default_epochs(10_000) == 2


def test_the_flag_help_states_the_defaults_training_uses():
    """One source per knob: the help's defaults are the config's, derived ones included."""
    cfg = tl.LocalTrainConfig.from_options("m", {"lr": None, "lora_r": 8}, n_examples=40)
    assert tl.local_help("lr") == "Local: learning rate (default 2e-4)." and cfg.lr == 2e-4
    assert tl.local_help("lora_r") == "Local: LoRA rank (default 16)."
    assert tl.local_help("lora_alpha") == "Local: LoRA alpha (default 2 x r)."
    assert cfg.lora_alpha == 16 and cfg.epochs == 3  # 2 x the rank given, OpenAI's rule
    assert "(default 0.05)" in tl.local_help("lora_dropout") and cfg.lora_dropout == 0.05
    assert "(default 1024)" in tl.local_help("batch_tokens") and cfg.batch_tokens == 1024
    assert "(default 1024)" in tl.local_help("max_seq_len") and cfg.max_seq_len == 1024
    assert "(default 1)" in tl.local_help("patience") and cfg.patience == 1
    assert "every 2 minutes" in tl.local_help("checkpoint_every")
    assert cfg.checkpoint_seconds == 120
    assert "(default auto)" in tl.local_help("device") and cfg.device == "auto"


def test_sigkill_mid_training_then_rerun_resumes_from_the_checkpoint(make_run, tiny_model_dir):
    """A real `kill -9` of `distill train` after a checkpoint: the rerun says where it resumes,
    finishes, and the log has every step once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = make_run("killed", train__jsonl=conversations(16), eval__jsonl=conversations(4, 16))
    out = run.path / "train" / f"local-{tiny_model_dir.name}"
    cmd = [sys.executable, "-m", "distill", "train", "--run", str(run.path)]
    cmd += ["--student", f"local:{tiny_model_dir}", "--epochs", "8", "--lr", "1e-2"]
    cmd += ["--batch-tokens", "128", "--device", "cpu", "--checkpoint-every", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint" / "state.pt").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint" / "state.pt").exists(), "no checkpoint before the kill"
    assert not (out / "adapter").exists(), "the kill should land before training finished"

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming from step" in rerun.stdout + rerun.stderr
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    steps = [
        json.loads(line)["step"]
        for line in (out / "log.jsonl").read_text().splitlines()
        if "lr" in line
    ]
    assert steps == list(range(1, len(steps) + 1))  # no step lost, none repeated
