"""`distill export --format gguf|transformers`: the LoRA student merged into its base, as one
GGUF whose metadata is the base's and whose weights read back (through transformers' own GGUF
loader, and llama.cpp where it is installed) as the student's, and as a transformers folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("gguf")

import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from conftest import STYLE, SYSTEM  # noqa: E402

from distill.cli import cli  # noqa: E402
from distill.runs import Run, sha256_file  # noqa: E402

ITEMS = ["fern", "cactus", "monstera", "orchid", "pothos", "snake plant", "bonsai", "ivy"]
ASKS = [
    ("My {p} order is late. Where is it?", "So sorry for the wait! Your {p} ships today."),
    ("How often do I water a {p}?", "Water your {p} once a week and keep it in bright light."),
]
FAST = ["--epochs", "3", "--lr", "1e-2", "--batch-tokens", "256", "--device", "cpu"]


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


def llama_cpp_permute(w, n_head: int, n_head_kv: int | None = None):
    """convert_hf_to_gguf.py's LlamaModel.permute, as llama.cpp writes q/k."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_tiny_gguf(model_dir: Path, path: Path) -> None:
    """The tiny random Llama as llama.cpp's converter would write it (F32, gpt2 tokenizer,
    the chat template): a base GGUF like the embedded model's, small enough for the suite."""
    import gguf
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    data = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = dict(data["model"]["vocab"])
    vocab.update({t["content"]: t["id"] for t in data["added_tokens"]})
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    specials = {t["content"] for t in data["added_tokens"]}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(
        [gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens]
    )
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(tok.chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            continue  # tied to the embeddings, as in SmolLM2
        stem, _, suffix = k.rpartition(".")
        arr = v.numpy()
        if "q_proj" in k:
            arr = llama_cpp_permute(arr, c.num_attention_heads, c.num_attention_heads)
        elif "k_proj" in k:
            arr = llama_cpp_permute(arr, c.num_attention_heads, c.num_key_value_heads)
        w.add_tensor(f"{names.get_name(stem)}.{suffix}", arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_base(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(base GGUF, the HF folder distill converts it to, as it does the embedded model's)."""
    from distill import local_model

    root = tmp_path_factory.mktemp("tiny-gguf")
    write_tiny_gguf(tiny_model_dir, root / "tiny.gguf")
    local_model._convert_gguf(root / "tiny.gguf", root / "base")
    return root / "tiny.gguf", root / "base"


@pytest.fixture(scope="module")
def trained(tiny_base, tmp_path_factory) -> Run:
    """A run whose local student was trained by `distill train` on the converted tiny base."""
    from distill.runs import atomic_write_jsonl

    _, base_dir = tiny_base
    run = Run.create("shop", outputs=tmp_path_factory.mktemp("outputs"))
    atomic_write_jsonl(run.file("train.jsonl"), conversations(16))
    atomic_write_jsonl(run.file("eval.jsonl"), conversations(4, 16))
    run.update_manifest(inputs={"style": {"path": str(STYLE), "sha256": sha256_file(STYLE)}})
    args = ["train", "--run", str(run.path), "--student", f"local:{base_dir}", *FAST]
    r = CliRunner().invoke(cli, [*args, "--export", "transformers"])
    assert r.exit_code == 0, r.output
    folder = run.path / "export" / "transformers"
    assert f"exported the student as transformers to {folder}" in r.output
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    return run


def logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def student_and_base(run: Run):
    from distill import local_model
    from distill.export.student import merged_student, trained_student

    student = trained_student(run)
    merged, tok = merged_student(student)
    base, _ = local_model.load(str(student.base_dir))
    return merged, base, tok


def prompt_ids(tok) -> list[int]:
    held_out = conversations(1, 21)[0]["messages"][:-1]  # not in train.jsonl
    return tok.apply_chat_template(held_out, add_generation_prompt=True, tokenize=True)["input_ids"]


@pytest.fixture(scope="module")
def exported(trained, tiny_base, tmp_path_factory) -> tuple[Path, str]:
    """(folder, output) of `distill export --format gguf` of the trained tiny student."""
    base_gguf, _ = tiny_base
    out = tmp_path_factory.mktemp("export") / "gguf"
    args = ["--run", str(trained.path), "--base-gguf", str(base_gguf), "--out", str(out)]
    r = CliRunner().invoke(cli, ["export", "--format", "gguf", *args])
    assert r.exit_code == 0, r.output
    return out, r.output


def test_gguf_export_reads_back_as_the_student(trained, tiny_base, exported):
    import gguf
    from transformers import AutoModelForCausalLM

    base_gguf, _ = tiny_base
    out, output = exported
    assert f"ollama create shop-base -f {out / 'Modelfile'}" in output

    # the base's metadata and tensor names/shapes, F16 matrices and F32 norms
    base, got = gguf.GGUFReader(str(base_gguf)), gguf.GGUFReader(str(out / "model.gguf"))
    for key, field in base.fields.items():
        if key.startswith("GGUF.") or key in ("general.name", "general.file_type"):
            continue
        assert got.fields[key].contents() == field.contents(), key
    assert got.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_F16
    assert [(t.name, t.shape.tolist()) for t in got.tensors] == [
        (t.name, t.shape.tolist()) for t in base.tensors
    ]
    kinds = {t.name: t.tensor_type.name for t in got.tensors}
    assert kinds["blk.0.attn_q.weight"] == "F16" and kinds["blk.0.attn_norm.weight"] == "F32"

    # transformers' GGUF loader (which undoes llama.cpp's q/k permutation) reads the student
    merged, base_model, tok = student_and_base(trained)
    from_gguf = AutoModelForCausalLM.from_pretrained(str(out), gguf_file="model.gguf")
    ids = prompt_ids(tok)
    want, have, before = logits(merged, ids), logits(from_gguf, ids), logits(base_model, ids)
    assert np.abs(want - have).max() < 2e-2  # F16 rounding of the matrices
    assert np.abs(want - before).max() > 0.5  # and the student is not the base
    assert (want.argmax(-1) == have.argmax(-1)).all()

    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./model.gguf\n" in modelfile and (out / "model.gguf").exists()
    assert "<|im_start|>{{ .Role }}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert f'SYSTEM """{SYSTEM}"""' in modelfile


def test_transformers_export_loads_with_automodel(trained, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "hf-model"
    r = CliRunner().invoke(
        cli, ["export", "--format", "transformers", "--run", str(trained.path), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and "rope_theta" in config
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    merged, _, _ = student_and_base(trained)
    ids = prompt_ids(tok)
    assert np.abs(logits(model, ids) - logits(merged, ids)).max() < 1e-4
    assert not any(p.name.startswith("adapter") for p in out.iterdir())  # merged, no adapter


def test_gguf_export_without_a_base_gguf_or_a_student_is_one_line(trained, make_run, tmp_path):
    r = CliRunner().invoke(cli, ["export", "--format", "gguf", "--run", str(trained.path)])
    assert r.exit_code == 2 and "pass --base-gguf FILE" in r.output
    assert len(r.output.strip().splitlines()) == 1
    untrained = make_run("fresh")
    r = CliRunner().invoke(cli, ["export", "--format", "gguf", "--run", str(untrained.path)])
    assert r.exit_code == 1 and "no finished local training" in r.output
    wrong = tmp_path / "not.gguf"
    wrong.write_bytes(b"GGUF but not really")
    r = CliRunner().invoke(
        cli, ["export", "--format", "gguf", "--run", str(trained.path), "--base-gguf", str(wrong)]
    )
    assert r.exit_code == 1 and "not a readable GGUF file" in r.output
    r = CliRunner().invoke(
        cli, ["train", "--run", str(untrained.path), "--student", "gpt-4o-mini", "--export", "gguf"]
    )
    assert r.exit_code == 2 and "gpt-4o-mini is hosted" in r.output
    assert "Traceback" not in r.output


def test_modelfile_template_follows_the_chat_template(tiny_model_dir):
    """ChatML is recognised by rendering the model's own template; any other template gets no
    TEMPLATE line (Ollama reads the GGUF's) and a note, and the EOS token still stops."""
    from transformers import AutoTokenizer

    from distill.export.student import modelfile

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text, note = modelfile(tok, "Be brief.")
    assert note is None and "TEMPLATE" in text and 'SYSTEM """Be brief."""' in text
    tok.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    text, note = modelfile(tok, None)
    assert "TEMPLATE" not in text and "SYSTEM" not in text
    assert note is not None and "not ChatML" in note
    assert 'PARAMETER stop "<|im_end|>"' in text  # the tokenizer's EOS


def test_gguf_in_llama_cpp_gives_the_students_logits(trained, exported):
    """llama.cpp itself (where llama-cpp-python is installed: the gguf-check extra) computes
    the student's next-token logits from the exported GGUF."""
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed: pip install 'distill[gguf-check]'"
    )
    out, _ = exported
    merged, base_model, tok = student_and_base(trained)
    llm = llama_cpp.Llama(
        model_path=str(out / "model.gguf"), n_ctx=256, logits_all=True, verbose=False
    )
    ids = prompt_ids(tok)
    assert llm.tokenize(tok.decode(ids).encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    got = np.asarray(llm.scores[len(ids) - 1])
    llm.close()
    want, before = logits(merged, ids)[-1], logits(base_model, ids)[-1]
    assert np.abs(got - want).max() < 5e-2  # F16 weights, llama.cpp's own kernels
    assert np.abs(want - before).max() > 0.5
    assert got.argmax() == want.argmax()
