"""One epoch of LoRA on SmolLM2-135M on CPU: distill's loop next to trl's SFTTrainer.

Both train the same LoRA (r=16, alpha=32, dropout 0.05, all linear projections) at the same
learning rate (2e-4) for one epoch on the same GreenLeaf-style chats, loss on assistant tokens
only. trl runs with its SFTConfig defaults otherwise (batch 8, gradient checkpointing on, bf16
autocast, no packing, no length grouping); its `assistant_only_loss` needs {% generation %}
markers, so it gets SmolLM2's own template with the markers added (the same text). Each
trainer runs in a fresh subprocess, so peak RSS is its own. Eval loss is measured the same way
for both (mean cross-entropy per assistant token on the held-out chats).

    flock /tmp/distill-torch.lock .venv/bin/python benchmarks/train_local.py [--train 64 --eval 16]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are GreenLeaf Support: warm, brief, solution-first."
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}
LR = 2e-4

# SmolLM2's chat template with {% generation %} around each reply (+ its end token): the
# rendered text is identical, and trl can find the assistant tokens.
SMOL_GENERATION_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\n' }}{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)

PLANTS = ["monstera", "fern", "snake plant", "pothos", "fiddle-leaf fig", "orchid", "cactus"]
ISSUES = [
    (
        "My {p} order is late. Where is it?",
        "So sorry for the wait! Your {p} left our greenhouse "
        "yesterday and tracking will update within the hour.",
    ),
    (
        "The {p} arrived with broken leaves.",
        "Oh no, sorry it arrived damaged! I've sent a "
        "replacement {p} today at no cost, no need to return the old one.",
    ),
    (
        "How often should I water my {p}?",
        "Great question! Water your {p} when the top two "
        "centimetres of soil are dry, usually once a week, and keep it in bright indirect light.",
    ),
    (
        "Can I change the delivery address for my {p}?",
        "Of course! Reply with the new address "
        "and I'll update it before your {p} ships tomorrow morning.",
    ),
    (
        "I want a refund for the {p}.",
        "Sorry the {p} didn't work out! I've started your refund; "
        "it reaches your card in 3 to 5 working days.",
    ),
]
FOLLOW_UPS = [
    ("Thanks. Will I get an email?", "Yes! You'll get a confirmation email within minutes."),
    (
        "It is a gift, can you add a note?",
        "Absolutely! Tell me the message and I'll add a handwritten card to the box.",
    ),
]


def chats(n: int, seed: int) -> list[dict]:
    """Deterministic GreenLeaf-style chats of 1 to 3 turns (lengths vary, as real data does)."""
    rng = random.Random(seed)
    out = []
    seeds = ROOT / "seeds" / "greenleaf.jsonl"
    if seeds.exists() and seed == 0:
        out = [json.loads(x) for x in seeds.read_text().splitlines() if x.strip()]
    while len(out) < n:
        p = rng.choice(PLANTS)
        user, reply = rng.choice(ISSUES)
        msgs = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user.format(p=p)},
            {"role": "assistant", "content": reply.format(p=p)},
        ]
        for fu_user, fu_reply in rng.sample(FOLLOW_UPS, rng.choice([0, 0, 1, 2])):
            msgs += [
                {"role": "user", "content": fu_user},
                {"role": "assistant", "content": fu_reply},
            ]
        out.append({"messages": msgs})
    return out[:n]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def eval_loss(model, tok, eval_rows: list[dict], precision: str) -> float:
    from distill.stages import train_local as tl

    data, _ = tl.encode_all(tok, [r["messages"] for r in eval_rows], 1024)
    return tl.evaluate(model, data, 1024, tok.pad_token_id, "cpu", precision)


def child_ours(train_rows, eval_rows, precision: str) -> dict:
    from distill.runs import Run, atomic_write_jsonl
    from distill.stages.train_local import train_local

    with tempfile.TemporaryDirectory() as d:
        run = Run.create("bench", outputs=Path(d))
        atomic_write_jsonl(run.file("train.jsonl"), train_rows)
        atomic_write_jsonl(run.file("eval.jsonl"), eval_rows)
        t0 = time.perf_counter()
        r = train_local(run, "smollm2-135m", epochs=1, lr=LR, device="cpu", precision=precision)
        wall = time.perf_counter() - t0
    return {
        "trainer": f"distill ({precision})",
        "tokens_per_s": r["tokens_per_s"],
        "train_seconds": r["seconds"],
        "wall_seconds": round(wall, 1),
        "eval_loss": r["best_eval_loss"],
        "base_eval_loss": r["base_eval_loss"],
        "steps": r["steps"],
        "peak_rss_mb": round(peak_rss_mb()),
    }


def child_trl(train_rows, eval_rows) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from distill.local_model import model_dir

    torch.manual_seed(0)
    t0 = time.perf_counter()
    base = str(model_dir("smollm2-135m"))
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = SMOL_GENERATION_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as d:
        args = SFTConfig(
            output_dir=d,
            num_train_epochs=1,
            learning_rate=LR,
            assistant_only_loss=True,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            seed=0,
            disable_tqdm=True,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            processing_class=tok,
            peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),
        )
        tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
        out = trainer.train()
        runtime = out.metrics["train_runtime"]
        wall = time.perf_counter() - t0
        trained = trainer.model
    trained.eval()
    return {
        "trainer": "trl SFTTrainer (bf16 default)",
        "tokens_per_s": round(tokens / runtime, 1),
        "train_seconds": round(runtime, 2),
        "wall_seconds": round(wall, 1),
        "eval_loss": eval_loss(trained, tok, eval_rows, "fp32"),
        "steps": out.global_step,
        "peak_rss_mb": round(peak_rss_mb()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--only", choices=["ours-fp32", "ours-bf16", "trl"], action="append")
    ap.add_argument("--child", choices=["ours-fp32", "ours-bf16", "trl"])
    a = ap.parse_args()
    train_rows, eval_rows = chats(a.train, 0), chats(a.eval, 1)
    if a.child:
        import warnings

        warnings.filterwarnings("ignore")
        res = (
            child_trl(train_rows, eval_rows)
            if a.child == "trl"
            else child_ours(train_rows, eval_rows, a.child.split("-")[1])
        )
        print("RESULT " + json.dumps(res), flush=True)
        return
    results = []
    for which in a.only or ["ours-fp32", "trl", "ours-bf16"]:
        cmd = [sys.executable, __file__, "--child", which, "--train", str(a.train)]
        cmd += ["--eval", str(a.eval)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{which} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads(line[7:]))
        print(json.dumps(results[-1]), flush=True)
    print(f"\n{a.train} train / {a.eval} eval chats, 1 epoch, SmolLM2-135M, CPU")
    print(
        f"{'trainer':34} {'tok/s':>7} {'train s':>8} {'wall s':>7} {'eval loss':>9} {'RSS MB':>7}"
    )
    for r in results:
        print(
            f"{r['trainer']:34} {r['tokens_per_s']:7.1f} {r['train_seconds']:8.1f} "
            f"{r['wall_seconds']:7.1f} {r['eval_loss']:9.4f} {r['peak_rss_mb']:7d}"
        )
    trl = next((r for r in results if r["trainer"].startswith("trl")), None)
    if trl:
        for r in results:
            if r is not trl:
                print(
                    f"{r['trainer']} vs trl: {r['tokens_per_s'] / trl['tokens_per_s']:.2f}x "
                    f"tokens/s, {r['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x peak RSS, "
                    f"eval loss {r['eval_loss']:.4f} vs {trl['eval_loss']:.4f}"
                )


if __name__ == "__main__":
    main()
