"""OpenAI's Batch API, as `distill generate --batch` uses it: upload a requests file (purpose
`batch`), create a batch for /v1/chat/completions with a 24 h window, look it up, download
its output and error files, cancel it.

The calls that create something (an upload, a batch) are sent once, without the SDK's
automatic retry: a retried POST after a lost answer could upload twice or start a second
paid batch. What a killed process may have created before it saw the answer is found again
by `find_file` (name and size) and `find_batch` (input file or metadata) on the next run.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

from distill.hosted.api import Api

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
MAX_REQUESTS = 50_000  # per input file (the API's limit)
MAX_BYTES = 190 * 1024 * 1024  # the API's limit is 200 MB per input file
LIST_PAGES = 5  # pages of 100 batches searched for one a killed run created


class BatchApi(Api):
    """The hosted API client (hosted/api.py) with the Batch API's calls."""

    def upload(self, path: Path, name: str) -> Any:
        once = self.client.with_options(max_retries=0)
        with open(path, "rb") as f:
            return self.call(
                f"uploading {path}", lambda: once.files.create(file=(name, f), purpose="batch")
            )

    def find_file(self, name: str, size: int) -> str | None:
        """The id of an uploaded batch file with this name and size (one a killed run sent)."""
        page = self.call(
            "listing uploaded batch files",
            lambda: self.client.files.list(purpose="batch", limit=100, order="desc"),
        )
        for f in page.data:
            if f.filename == name and f.bytes == size:
                return str(f.id)
        return None

    def create(self, file_id: str, metadata: dict[str, str]) -> Any:
        once = self.client.with_options(max_retries=0)
        return self.call(
            f"creating a batch for {file_id}",
            lambda: once.batches.create(
                input_file_id=file_id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata=metadata,
            ),
        )

    def find_batch(self, file_id: str, input_sha: str) -> Any | None:
        """A batch made from `file_id` (or tagged with the input's sha256), newest first."""
        after: str | None = None
        for _ in range(LIST_PAGES):
            kwargs: dict[str, Any] = {"limit": 100}
            if after:
                kwargs["after"] = after
            page = self.call(
                "listing batches", functools.partial(self.client.batches.list, **kwargs)
            )
            data = list(page.data)
            for b in data:
                meta = getattr(b, "metadata", None) or {}
                if b.input_file_id == file_id or meta.get("distill_input") == input_sha:
                    return b
            if not data or not getattr(page, "has_more", False) or data[-1].id == after:
                return None
            after = data[-1].id
        return None

    def batch(self, batch_id: str, quiet: bool = False) -> Any:
        """GET the batch; with quiet=True transient failures raise TransientError to retry."""
        if not quiet:
            return self.call(
                f"looking up batch {batch_id}", lambda: self.client.batches.retrieve(batch_id)
            )
        with self._polling(f"looking up batch {batch_id}"):
            return self.client.batches.retrieve(batch_id)

    def content(self, file_id: str) -> bytes:
        """A file's bytes (the API describes them as JSONL; accept whatever type it says)."""
        response = self.call(
            f"downloading file {file_id}",
            lambda: self.client.files.content(file_id, extra_headers={"Accept": "*/*"}),
        )
        return bytes(response.read())

    def cancel(self, batch_id: str) -> Any:
        return self.call(
            f"cancelling batch {batch_id}", lambda: self.client.batches.cancel(batch_id)
        )


def batch_dict(b: Any) -> dict[str, Any]:
    """What the run remembers of a batch the server described (never anything about keys)."""
    counts = getattr(b, "request_counts", None)
    errors = []
    with contextlib.suppress(AttributeError, TypeError):
        for e in (b.errors.data if b.errors else None) or []:
            errors.append({"code": e.code, "message": e.message, "line": e.line})
    return {
        "batch_id": b.id,
        "status": b.status,
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "request_counts": (
            {"total": counts.total, "completed": counts.completed, "failed": counts.failed}
            if counts is not None
            else None
        ),
        "errors": errors or None,
    }
