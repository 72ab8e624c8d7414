"""The names callers import from one place: the Backend interface (chat.py), what a call
returns (reply.py), calls through calls.sqlite (cache.py) and the fake used in tests."""

from __future__ import annotations

from distill.backends.cache import cached_chat
from distill.backends.chat import Backend, Call
from distill.backends.fake import FakeBackend
from distill.backends.reply import InvalidOutput, Reply, Usage, first_error

__all__ = [
    "Backend",
    "Call",
    "FakeBackend",
    "InvalidOutput",
    "Reply",
    "Usage",
    "cached_chat",
    "first_error",
]
