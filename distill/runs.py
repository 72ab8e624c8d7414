"""The run folder: manifest, atomic and append-only writes, and which run is current.

Every write is either atomic (write to a temp file, fsync, rename) or an append of whole
lines, so a process killed at any moment leaves files a rerun can trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from distill.errors import InputError, RunError

OUTPUTS = Path(os.environ.get("DISTILL_OUTPUTS", "outputs"))
CURRENT_FILE = ".current"


@contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on success fsync and rename it into place, so readers
    see either the old file or the whole new one. On any error the temp file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        encoding = None if "b" in mode else "utf-8"
        with open(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see either the old file or the whole new one."""
    with atomic_file(path) as f:
        f.write(text)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def manifest_text(manifest: dict[str, Any]) -> str:
    """A manifest as JSON with one top-level key per line. Written after every stage event,
    it can hold a plan of thousands of points: indent=2 would take json's pure-Python encoder
    (8x slower), which cost generate ~0.1 ms per call."""
    items = [
        f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False, default=str)}"
        for k, v in manifest.items()
    ]
    return "{\n" + ",\n".join(items) + "\n}\n"


def atomic_write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write a whole JSONL file atomically; returns the number of lines."""
    n = 0
    with atomic_file(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Append whole lines and fsync. A kill mid-write can leave at most one partial last
    line, which `read_jsonl` ignores and `repair_jsonl` trims before the next append."""
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_jsonl(path)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not data:
        return 0
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return data.count("\n")


def repair_jsonl(path: Path) -> None:
    """Cut a partial last line (no trailing newline) left by a killed writer."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        size = f.seek(0, os.SEEK_END)
        pos = size
        chunk = 65536
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            i = buf.rfind(b"\n")
            if i >= 0:
                f.truncate(start + i + 1)
                return
            pos = start
        f.truncate(0)


def jsonl_lines(path: Path) -> Iterator[tuple[int, str, int]]:
    """(line number, text ending in a newline, bytes read so far) for each non-blank line,
    unparsed, so a caller can pass lines on as they came. A byte-order mark on the first line
    is dropped (`distill validate` reports it); a partial last line (a killed writer) that is
    not valid JSON is skipped; a line that is not UTF-8 is an InputError naming file:line."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder; pass a .jsonl file") from None
    done = 0
    with f:
        for lineno, raw in enumerate(f, 1):
            done += len(raw)
            last = not raw.endswith(b"\n")
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if last:
                    return  # a write cut inside a multi-byte character
                raise InputError(
                    f"{path}:{lineno}: not UTF-8 text (byte {e.start}); save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            if last:
                try:
                    json.loads(line)
                except json.JSONDecodeError:
                    return  # truncated final line from a killed writer
                except RecursionError:
                    pass  # whole, only too deep: parse_jsonl_line says so
                line += "\n"
            yield lineno, line, done


def parse_jsonl_line(path: Path, lineno: int, line: str) -> Any:
    """One line's JSON value; invalid or too-deep JSON is an InputError naming file:line."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path}:{lineno}: invalid JSON ({e.msg}); fix or remove the line"
        ) from None
    except RecursionError:
        raise InputError(f"{path}:{lineno}: JSON nested too deeply") from None


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield records of a JSONL file. A partial last line (a killed writer) is skipped; any
    other bad line (not UTF-8, not JSON, not an object, too deep) is an InputError naming
    file:line and what to do."""
    for lineno, line, _ in jsonl_lines(path):
        obj = parse_jsonl_line(path, lineno, line)
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object per line")
        yield obj


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Run:
    """One run folder under outputs/: manifest.json plus the stage files (README: the run folder)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- locating -------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, outputs: Path | None = None) -> Run:
        """Create (or reopen) outputs/<name>/ and make it the current run."""
        root = outputs or OUTPUTS
        run = cls.at(root / name)
        run.make_current(root)
        return run

    @classmethod
    def at(cls, path: Path) -> Run:
        """Create (or reopen) a run folder at `path`, leaving the current run as it is."""
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        if not run.manifest_path.exists():
            atomic_write_json(
                run.manifest_path,
                {
                    "name": run.path.name,
                    "created": _now(),
                    "config": {},
                    "inputs": {},
                    "stages": {},
                },
            )
        return run

    @classmethod
    def open(cls, run_dir: str | Path | None = None, outputs: Path | None = None) -> Run:
        """The run named by --run, else the current one; RunError when there is none."""
        root = outputs or OUTPUTS
        if run_dir is None:
            marker = root / CURRENT_FILE
            if not marker.exists():
                raise RunError(
                    f"no current run in {root}/; run `distill generate --seeds FILE` first "
                    "or pass --run DIR"
                )
            run_dir = Path(marker.read_text(encoding="utf-8").strip())
            if not run_dir.is_absolute():
                run_dir = root / run_dir
        run = cls(Path(run_dir))
        if not run.manifest_path.exists():
            raise RunError(
                f"{run.path}: not a distill run folder (no manifest.json); pass --run DIR"
            )
        return run

    def make_current(self, outputs: Path | None = None) -> None:
        root = outputs or OUTPUTS
        root.mkdir(parents=True, exist_ok=True)
        try:
            rel = self.path.resolve().relative_to(root.resolve())
            target = str(rel)
        except ValueError:
            target = str(self.path.resolve())
        atomic_write_text(root / CURRENT_FILE, target + "\n")

    # -- files ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def file(self, name: str) -> Path:
        return self.path / name

    def require(self, name: str, hint: str) -> Path:
        """A stage input that must exist; RunError with the command that makes it."""
        p = self.file(name)
        if not p.exists():
            raise RunError(f"{p}: missing; {hint}")
        return p

    # -- manifest -------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise RunError(
                f"{self.manifest_path}: unreadable ({e}); restore it or start a new run"
            ) from None

    def update_manifest(self, **changes: Any) -> dict[str, Any]:
        """Merge top-level keys (dicts merge one level deep) and write atomically."""
        m = self.manifest
        for k, v in changes.items():
            if isinstance(v, dict) and isinstance(m.get(k), dict):
                m[k] = {**m[k], **v}
            else:
                m[k] = v
        m["updated"] = _now()
        atomic_write_text(self.manifest_path, manifest_text(m))
        return m

    def record_stage(self, stage: str, status: str, **info: Any) -> None:
        """Record a stage's status, counts and whatever else it wants remembered."""
        m = self.manifest
        entry = {**m.get("stages", {}).get(stage, {}), **info, "status": status, "at": _now()}
        m.setdefault("stages", {})[stage] = entry
        m["updated"] = _now()
        atomic_write_text(self.manifest_path, manifest_text(m))

    def stage(self, stage: str) -> dict[str, Any]:
        return self.manifest.get("stages", {}).get(stage, {})

    # -- rejected -------------------------------------------------------------------------
    def reject(self, records: Iterable[tuple[dict[str, Any], str, str]]) -> int:
        """Append (example record, stage, reason) rows to rejected.jsonl."""
        rows = [
            {"id": rec.get("id"), "stage": stage, "reason": reason, "example": rec, "at": _now()}
            for rec, stage, reason in records
        ]
        return append_jsonl(self.file("rejected.jsonl"), rows)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
