"""The run's local student outside distill: the LoRA adapter merged into its base, as one GGUF
with an Ollama Modelfile (`gguf`) or as a transformers model folder (`transformers`).

A GGUF needs the base as GGUF: the embedded models are GGUF files already (their HF folder is a
conversion of it), and a base given as a folder needs `--base-gguf`, the GGUF it came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import DistillError, RunError, UsageError, require
from distill.export.dataset import Exported, default_folder, export_folder, write_marker
from distill.runs import Run, atomic_write_text

STUDENT_FORMATS = ("gguf", "transformers")
# a probe conversation: a template that renders it as ChatML is ChatML
PROBE = [
    {"role": "system", "content": "S1"},
    {"role": "user", "content": "U1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "U2"},
]
# Ollama's Go template for ChatML, for chat (.Messages) and generate (.Prompt) requests alike.
# The system prompt comes from .System (the Modelfile's SYSTEM or the request's system
# messages, which Ollama collects there) and the range skips system messages, as Ollama's own
# templates do: that holds whether or not an Ollama version also leaves them in .Messages.
OLLAMA_CHATML = (
    "{{- if .System }}<|im_start|>system\n"
    "{{ .System }}<|im_end|>\n"
    '{{ end }}{{- if .Messages }}{{- range .Messages }}{{- if ne .Role "system" }}'
    "<|im_start|>{{ .Role }}\n"
    "{{ .Content }}<|im_end|>\n"
    "{{ end }}{{ end }}<|im_start|>assistant\n"
    "{{ else }}{{ if .Prompt }}<|im_start|>user\n"
    "{{ .Prompt }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
    "{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"
)


@dataclass
class Student:
    """A finished local training: base (an embedded name or a folder) plus its adapter."""

    base: str  # what follows local: in the student string
    base_dir: Path
    adapter: Path


def trained_student(run: Run) -> Student:
    train = run.stage("train")
    student = str(train.get("student") or "")
    if train.get("status") != "done" or not train.get("adapter"):
        if student and not student.startswith("local:"):
            raise RunError(
                f"{run.manifest_path}: the run's student {student} is hosted: its weights stay "
                "with the provider; export its data with --format openai"
            )
        raise RunError(
            f"{run.manifest_path}: no finished local training; run `distill train --student "
            "local:smollm2-135m` first"
        )
    adapter = Path(train["adapter"])
    if not (adapter / "adapter_config.json").exists() or not train.get("base_dir"):
        raise RunError(f"{adapter}: the trained adapter is missing; run `distill train` again")
    return Student(student.removeprefix("local:"), Path(train["base_dir"]), adapter)


def base_gguf_for(student: Student, given: Path | None) -> Path:
    if given is not None:
        if not given.is_file():
            raise UsageError(f"{given}: no such file; pass --base-gguf FILE")
        return given
    from distill import local_model

    if student.base in local_model.EMBEDDED:
        return local_model._embedded_gguf(student.base)
    raise UsageError(
        f"the student's base {student.base} is a model folder: pass --base-gguf FILE (the GGUF "
        "it was converted from), or export --format transformers and convert that folder with "
        "llama.cpp's convert_hf_to_gguf.py"
    )


def merged_student(student: Student) -> tuple[Any, Any]:
    """(model, tokenizer): the base with the adapter's LoRA weights merged in, in fp32."""
    peft = require("peft", "local", "exporting a LoRA student")
    from distill import local_model

    model, _ = local_model.load(str(student.base_dir))
    transformers = require("transformers", "local", "exporting a LoRA student")
    tok = transformers.AutoTokenizer.from_pretrained(str(student.adapter))
    merged = peft.PeftModel.from_pretrained(model, str(student.adapter)).merge_and_unload()
    merged.eval()
    return merged, tok


def export_student(
    run: Run,
    fmt: str,
    out: Path | None = None,
    base_gguf: Path | None = None,
    dtype: str = "f16",
) -> Exported:
    """Merge the run's LoRA student into its base and write it as `fmt` to `out` (default
    <run>/export/<fmt>/), whole or not at all."""
    if fmt not in STUDENT_FORMATS:
        raise UsageError(f"unknown model format {fmt!r}; choose one of {STUDENT_FORMATS}")
    student = trained_student(run)
    gguf = base_gguf_for(student, base_gguf) if fmt == "gguf" else None
    folder = out or default_folder(run, fmt)
    model, tok = merged_student(student)
    notes: list[str] = []
    with export_folder(folder) as tmp:
        if gguf is not None:
            from distill.export.gguf_file import write_merged_gguf

            state = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
            info = write_merged_gguf(
                gguf, state, tmp / "model.gguf", name=f"{run.name} (distill student)", dtype=dtype
            )
            notes.append(
                f"model.gguf: {info['tensors']} tensors ({dtype}, norms f32), "
                f"{info['bytes'] / 1e6:.0f} MB, metadata from {gguf.name}"
            )
            text, why = modelfile(tok, system_prompt(run))
            atomic_write_text(tmp / "Modelfile", text)
            if why:
                notes.append(why)
            files = [folder / "model.gguf", folder / "Modelfile"]
        else:
            save_transformers(model, tok, tmp)
            files = [folder / "config.json", folder / "model.safetensors"]
        write_marker(tmp, run, fmt, base=f"local:{student.base}", adapter=str(student.adapter))
    return Exported(folder, files, {}, notes)


def save_transformers(model: Any, tok: Any, folder: Path) -> None:
    """A model folder other tools read: safetensors weights, config.json with rope_theta at
    the top level too (older readers look for it there), the chat template both in
    tokenizer_config.json and as chat_template.jinja."""
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder), save_jinja_files=False)
    if isinstance(getattr(tok, "chat_template", None), str):
        atomic_write_text(folder / "chat_template.jinja", tok.chat_template)
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]
        atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def system_prompt(run: Run) -> str | None:
    from distill.evaluation.inputs import load_style

    try:
        style = load_style(run)
    except DistillError:
        return None
    return style.system_prompt if style else None


def is_chatml(tok: Any) -> bool:
    """Does the tokenizer's own chat template render a conversation exactly as ChatML?"""
    try:
        got = tok.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
    except Exception:  # a template that cannot render the probe is not ChatML
        return False
    want = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in PROBE)
    return bool(got == want + "<|im_start|>assistant\n")


def modelfile(tok: Any, system: str | None) -> tuple[str, str | None]:
    """The Modelfile's text beside model.gguf, and a note when the template is left to Ollama.
    TEMPLATE and the stop tokens follow the model's chat template (ChatML is recognised by
    rendering it); SYSTEM is the style spec's system prompt, which the student was trained on."""
    lines = [
        "# Ollama: the distill student (base + LoRA merged) as one GGUF.",
        "#   ollama create NAME -f Modelfile   (run it in this folder)",
        "FROM ./model.gguf",
    ]
    note = None
    stops: list[str] = []
    if is_chatml(tok):
        lines.append(f'TEMPLATE """{OLLAMA_CHATML}"""')
        stops.append("<|im_end|>")
    else:
        note = (
            "Modelfile: the chat template is not ChatML, so it sets no TEMPLATE; Ollama takes "
            "the one in the GGUF's metadata (tokenizer.chat_template)"
        )
    eos = getattr(tok, "eos_token", None)
    if isinstance(eos, str) and eos and eos not in stops:
        stops.append(eos)
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    if system:
        lines.append(f'SYSTEM """{system.replace(chr(34) * 3, chr(39) * 3)}"""')
    return "\n".join(lines) + "\n", note
