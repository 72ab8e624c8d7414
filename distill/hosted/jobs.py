"""A hosted job's state on disk: train/<model>/job.json (everything needed to resume, written
atomically on each save), train/uploads.json (a file's sha256 -> its id on a server, so the
same content is never uploaded twice) and the lock that keeps two processes from starting
the same job."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill.errors import RunError, UsageError
from distill.runs import atomic_write_json


class JobFile:
    """train/<model>/job.json: everything needed to resume, written atomically on each save."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = _read(path)
        except (OSError, ValueError) as e:
            raise RunError(
                f"{path}: unreadable ({e}); it remembers the hosted job, restore it or "
                "delete it to start a new job"
            ) from None

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def save(self, **changes: Any) -> None:
        self.data.update(changes)
        self.data["updated"] = _now()
        atomic_write_json(self.path, self.data)

    def record_job(self, job: Any) -> None:
        """Remember what the server says about the job (never anything about the key)."""
        err = getattr(job, "error", None)
        self.save(
            job_id=job.id,
            status=job.status,
            fine_tuned_model=job.fine_tuned_model,
            trained_tokens=job.trained_tokens,
            result_files=list(job.result_files or []),
            error=error_dict(err),
            estimated_finish=getattr(job, "estimated_finish", None),
        )


class Uploads:
    """train/uploads.json: sha256 of a file's bytes -> file id, per server, for every student."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = _read(path)
        except (OSError, ValueError):
            self.data = {}  # only a cache: the worst case is one more upload

    @staticmethod
    def _key(server: str, sha: str) -> str:
        return f"{server} {sha}"

    def find(self, server: str, sha: str) -> str | None:
        entry = self.data.get(self._key(server, sha))
        return entry["id"] if entry else None

    def remember(self, server: str, sha: str, file_id: str, name: str, size: int) -> None:
        self.data[self._key(server, sha)] = {
            "id": file_id,
            "file": name,
            "bytes": size,
            "at": _now(),
        }
        atomic_write_json(self.path, self.data)


def safe_name(text: str) -> str:
    """A file or folder name from a model id or a server-side filename."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:120]


def error_dict(err: Any) -> dict[str, Any] | None:
    if err is None:
        return None
    if isinstance(err, dict):
        d = err
    else:
        d = {k: getattr(err, k, None) for k in ("code", "message", "param")}
    if not any(d.get(k) for k in ("code", "message")):
        return None
    return {k: d.get(k) for k in ("code", "message", "param")}


@contextlib.contextmanager
def exclusive(
    folder: Path, who: str = "`distill train` is uploading or starting this job"
) -> Iterator[None]:
    """One process at a time uploads and creates a job for a student (no duplicate jobs), or
    follows a run's batches. The lock dies with its process, so a SIGKILL never leaves it
    stuck."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(folder / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(
                f"{folder}: another {who}; let it finish or stop it, then rerun"
            ) from None
        yield


def _read(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, {} when there is no file yet."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
