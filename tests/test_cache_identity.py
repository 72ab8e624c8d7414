"""A student retrained in place (same adapter folder) is a new model for calls.sqlite: eval
never replays the previous student's answers as the new one's."""

from __future__ import annotations

import asyncio
import os

from distill.backends import FakeBackend
from distill.backends.cache import cached_chat
from distill.backends.local import LocalBackend
from distill.calls import CallLog


def test_a_local_folder_retrained_in_place_gets_a_new_identity(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v1")
    backend = LocalBackend(str(adapter))
    first = backend.identity()
    assert first.startswith(f"local:{adapter}@") and backend.identity() == first
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v2, retrained")
    os.utime(adapter / "adapter_model.safetensors", ns=(1, 2))
    assert backend.identity() != first
    assert LocalBackend("smollm2-135m").identity() == "local:smollm2-135m"


def test_cached_calls_are_keyed_by_identity(tmp_path):
    calls = CallLog(tmp_path / "calls.sqlite")
    messages = [{"role": "user", "content": "hi"}]

    class Student(FakeBackend):
        version = "v1"

        def identity(self) -> str:
            return f"{self.ref}@{self.version}"

    old = Student(default=lambda m: "old student")
    assert asyncio.run(cached_chat(old, calls, "eval", messages)).text == "old student"
    again = Student(default=lambda m: "never asked")
    assert asyncio.run(cached_chat(again, calls, "eval", messages)).cached  # same weights
    new = Student(default=lambda m: "new student")
    new.version = "v2"
    reply = asyncio.run(cached_chat(new, calls, "eval", messages))
    assert reply.text == "new student" and not reply.cached
    calls.close()
