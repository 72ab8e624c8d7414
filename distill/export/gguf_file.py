"""One GGUF from merged weights: every metadata key of the base GGUF (architecture, tokenizer,
chat template) copied as it is, and the merged tensors written under the base's tensor names.

The base's names and shapes are the contract: each tensor of the base GGUF is written from the
merged model's tensor of the same role, or the export stops. llama.cpp's convert_hf_to_gguf.py
permutes the rows of llama q/k projections (rotary halves interleaved, per head); transformers'
GGUF loader undoes it when it reads a GGUF (`LlamaTensorProcessor`), so the same permutation is
applied here on the way back. Matrices are written as F16 (or F32), norms as F32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distill.errors import InputError, require

SUPPORTED_ARCHS = ("llama",)  # SmolLM2, Llama 2/3 and other llama-architecture GGUFs
DTYPES = ("f16", "f32")


def permute_qk(weights: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """llama.cpp's HF -> GGUF row order of a q (n_head) or k (n_head_kv) projection."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def field_value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def write_merged_gguf(
    base: Path, state: dict[str, Any], out: Path, *, name: str, dtype: str = "f16"
) -> dict[str, Any]:
    """Write `out` from the base GGUF's metadata and `state` (HF tensor name -> numpy array of
    the merged model); returns what was written (tensor count, types, bytes)."""
    gguf = require("gguf", "local", "GGUF export")
    np = require("numpy", "local", "GGUF export")
    try:
        reader = gguf.GGUFReader(str(base))
    except (OSError, ValueError) as e:
        raise InputError(f"{base}: not a readable GGUF file ({e}); pass --base-gguf FILE") from None
    arch = field_value(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise InputError(
            f"{base}: architecture {arch!r}; GGUF export supports {', '.join(SUPPORTED_ARCHS)} "
            "models (export --format transformers and convert it with llama.cpp's "
            "convert_hf_to_gguf.py)"
        )
    n_layers = int(field_value(reader, f"{arch}.block_count"))
    n_head = int(field_value(reader, f"{arch}.attention.head_count"))
    n_head_kv = int(field_value(reader, f"{arch}.attention.head_count_kv") or n_head)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    to_hf: dict[str, str] = {}
    for hf_name in state:
        stem, _, suffix = hf_name.rpartition(".")
        mapped = names.get_name(stem)
        if mapped is not None:
            to_hf[f"{mapped}.{suffix}"] = hf_name

    file_type = gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32
    part = out.with_name(f".{out.name}.part")
    writer = gguf.GGUFWriter(str(part), arch)
    try:
        for field in reader.fields.values():
            key = field.name
            if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
                continue  # written by GGUFWriter itself, or changed below
            value = name if key == "general.name" else field.contents()
            sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, value, field.types[0], sub_type=sub)
        writer.add_file_type(file_type)
        if field_value(reader, "general.name") is None:
            writer.add_name(name)
        types: dict[str, int] = {}
        for t in reader.tensors:
            source = to_hf.get(t.name)
            if source is None:
                raise InputError(
                    f"{base}: tensor {t.name} has no counterpart in the merged model; is this "
                    "the GGUF the student's base was converted from? (--base-gguf)"
                )
            w = np.asarray(state[source], dtype=np.float32)
            if ".attn_q." in t.name:
                w = permute_qk(w, n_head, n_head)
            elif ".attn_k." in t.name:
                w = permute_qk(w, n_head, n_head_kv)
            want = tuple(int(d) for d in reversed(t.shape.tolist()))
            if w.shape != want:
                raise InputError(
                    f"{base}: tensor {t.name} is {want} but the merged model's {source} is "
                    f"{w.shape}; pass the GGUF the student's base was converted from (--base-gguf)"
                )
            data = w.astype(np.float16) if dtype == "f16" and w.ndim > 1 else w
            types[data.dtype.name] = types.get(data.dtype.name, 0) + 1
            writer.add_tensor(t.name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(part, out)
    except BaseException:
        writer.close()
        part.unlink(missing_ok=True)
        raise
    return {"tensors": len(reader.tensors), "types": types, "bytes": out.stat().st_size}
