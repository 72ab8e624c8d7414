"""The fine-tuning API: the official `openai` client plus one-line errors that name the
server's own words, its code, the HTTP status and the request id (never the key)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from distill.errors import BackendError
from distill.hosted.out import Out

T = TypeVar("T")

EVENT_PAGE = 100
EVENT_PAGES = 20  # at most this many pages of history per poll
CLIENT_RETRIES = 3  # the SDK retries 408/409/429/5xx and connection errors with backoff


class ApiError(BackendError):
    """An API call failed; `status_code` is None when no answer came (network, timeout)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TransientError(Exception):
    """A poll that failed in a way worth retrying (network, 5xx, 429)."""


class Api:
    """The official `openai` client plus one-line errors that name the request id."""

    def __init__(self, key: str, base_url: str | None, out: Out) -> None:
        import openai

        self.base_url = base_url.rstrip("/") if base_url else None
        self.client = openai.OpenAI(
            api_key=key, base_url=self.base_url, max_retries=CLIENT_RETRIES, timeout=120.0
        )
        self.server = self.base_url or "https://api.openai.com/v1"
        self.out = out

    def call(self, what: str, fn: Callable[[], T]) -> T:
        import openai

        try:
            return fn()
        except openai.APIStatusError as e:
            raise ApiError(
                self.out.scrub(f"{what} failed: {status_text(e)}"), e.status_code
            ) from None
        except openai.APIConnectionError as e:
            raise ApiError(
                self.out.scrub(
                    f"{what} failed: cannot reach {self.server} ({cause(e)}); check the "
                    "network or --base-url"
                )
            ) from None

    def retrieve(self, job_id: str, quiet: bool = False) -> Any:
        """GET the job; with quiet=True transient failures raise TransientError to retry."""
        if not quiet:
            return self.call(
                f"looking up job {job_id}",
                lambda: self.client.fine_tuning.jobs.retrieve(job_id),
            )
        with self._polling(f"looking up job {job_id}"):
            return self.client.fine_tuning.jobs.retrieve(job_id)

    def new_events(self, job_id: str, last_id: str | None) -> list[Any]:
        """Events newer than `last_id`, oldest first (the API lists newest first)."""
        fresh: list[Any] = []
        ids: set[str] = set()
        after: str | None = None
        with self._polling(f"listing events of job {job_id}"):
            for _ in range(EVENT_PAGES):
                kwargs: dict[str, Any] = {"limit": EVENT_PAGE}
                if after:
                    kwargs["after"] = after
                page = self.client.fine_tuning.jobs.list_events(job_id, **kwargs)
                data = list(page.data)
                if len(data) > 1 and (data[0].created_at or 0) < (data[-1].created_at or 0):
                    data.reverse()  # a server that lists oldest first
                stop = False
                for ev in data:
                    if ev.id == last_id:
                        stop = True
                        break
                    if ev.id not in ids:
                        ids.add(ev.id)
                        fresh.append(ev)
                if stop or not data or not getattr(page, "has_more", False):
                    break
                if data[-1].id == after:
                    break  # a server that ignores `after`: no progress to make
                after = data[-1].id
        fresh.reverse()
        return fresh

    @contextlib.contextmanager
    def _polling(self, what: str) -> Iterator[None]:
        """A poll's failures: TransientError (network, 408/409/429, 5xx) to retry, a
        BackendError naming `what` for anything else."""
        import openai

        try:
            yield
        except openai.APIStatusError as e:
            if e.status_code in (408, 409, 429) or e.status_code >= 500:
                raise TransientError(self.out.scrub(status_text(e))) from None
            raise BackendError(self.out.scrub(f"{what} failed: {status_text(e)}")) from None
        except openai.APIConnectionError as e:
            raise TransientError(self.out.scrub(cause(e))) from None

    def find_created(self, request_key: str, pending: dict[str, Any]) -> Any | None:
        """The job a killed run may have created before it saw the answer (matched by the
        metadata we sent, or by files and model on servers that drop metadata)."""
        page = self.call(
            "listing fine-tuning jobs",
            lambda: self.client.fine_tuning.jobs.list(
                limit=20, metadata={"distill_request": request_key}
            ),
        )
        since = int(pending.get("since") or 0) - 120
        for job in page.data:
            meta = getattr(job, "metadata", None) or {}
            if meta.get("distill_request") == request_key:
                return job
        for job in page.data:
            if (
                not getattr(job, "metadata", None)
                and job.training_file == pending.get("training_file")
                and job.validation_file == pending.get("validation_file")
                and (job.created_at or 0) >= since
            ):
                return job
        return None


def api_key() -> str:
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not key:
        raise BackendError(
            "OPENAI_API_KEY is not set; export OPENAI_API_KEY=... (your key for the fine-tuning "
            "API) and rerun"
        )
    return key


def status_text(e: Any) -> str:
    """The server's own words, its code, the HTTP status and the request id, on one line."""
    body = e.body if isinstance(e.body, dict) else {}
    message = body.get("message") or e.message
    code = body.get("code") or getattr(e, "code", None)
    rid = e.request_id or e.response.headers.get("x-request-id")
    parts = [f"HTTP {e.status_code}"]
    if code:
        parts.append(f"code {code}")
    parts.append(f"request id {rid or 'none'}")
    return f"{message} ({', '.join(parts)})"


def cause(e: BaseException) -> str:
    inner = e.__cause__ or e.__context__
    return f"{type(inner).__name__}: {inner}" if inner else str(e)
