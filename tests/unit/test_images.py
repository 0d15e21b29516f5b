"""Images without an engine: PNG provenance, the image validator, parameter planning, checkpoint checks."""

from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path

import numpy as np
import pytest

from conftest import make_settings, open_catalog, plan, validate_output
from genforge.contenttypes.image import ImageRecord, ImageScheduler
from genforge.contenttypes.request import GenerateRequest
from genforge.core.catalog import PACKAGED
from genforge.engines import portrait
from genforge.engines.base import EngineOutput, ImageFacts, ResolvedModel
from genforge.engines.diffusers import SCHEDULERS
from genforge.errors import InvalidOutput, InvalidRequest, ModelUnavailable
from genforge.media.images import (
    compare_provenance,
    diffusers_native_size,
    encode_checked_png,
    encode_png,
    is_png,
    params_json,
    provenance,
    read_png_text,
    read_provenance,
)


def noise(width: int = 32, height: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, size=(height, width, 3), dtype=np.uint8)


def record(**over) -> ImageRecord:
    rec = {
        "id": "c-1",
        "content_type": "image",
        "status": "succeeded",
        "prompt": "a café at night ☕",
        "quality": "standard",
        "params": {"width": 32, "height": 32, "seed": 5},
        "model": {"name": "m", "file_sha256": "ab" * 32, "engine": "diffusers", "engine_version": "diffusers 1"},
        "artifact": None,
        "timings": {"load_ms": None, "generate_ms": None, "total_ms": None},
        "created_at": "2026-01-01T00:00:00+00:00",
        "finished_at": None,
        "error": None,
    }
    rec.update(over)
    return ImageRecord.model_validate(rec)


def chunks_for(rec: ImageRecord) -> dict[str, str]:
    return provenance(
        content_id=rec.id,
        model=rec.model.name,
        model_sha256=rec.model.file_sha256,
        engine=rec.model.engine,
        engine_version=rec.model.engine_version,
        seed=rec.params.seed,
        params=rec.params.model_dump(),
        prompt=rec.prompt,
        details={"image": {"device": "cpu"}},
    )


def output(png: bytes) -> EngineOutput:
    return EngineOutput(
        data=png, media_type="image/png", engine_version="x", load_ms=0, generate_ms=1, facts=ImageFacts()
    )


def validate_image(out: EngineOutput, params: dict) -> None:
    validate_output("image", out, params, "a cat")


# --- PNG provenance ------------------------------------------------------------------------------------
def test_text_chunks_round_trip_including_text_that_is_not_latin_1():
    rec = record()
    png = encode_png(noise(), chunks_for(rec))
    assert is_png(png)
    text = read_png_text(png)
    assert text["genforge:prompt"] == "a café at night ☕"
    assert json.loads(text["genforge:image"]) == {"device": "cpu"}
    assert compare_provenance(read_provenance(png), rec) == []


def test_provenance_that_disagrees_with_the_record_is_named():
    png = encode_png(noise(), chunks_for(record()))
    problems = compare_provenance(read_provenance(png), record(id="c-2", params={"width": 32, "height": 32, "seed": 6}))
    assert any(p.startswith("content_id") for p in problems)
    assert any(p.startswith("seed") for p in problems) and any(p.startswith("params") for p in problems)
    assert compare_provenance({}, record())[0].endswith("missing from the PNG")


def test_params_json_is_canonical():
    assert params_json({"b": 1, "a": 7.5}) == params_json({"a": 7.5, "b": 1}) == '{"a":7.5,"b":1}'


def test_encode_png_refuses_bad_input():
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), np.uint8), {})
    with pytest.raises(ValueError):
        encode_png(noise(), {"": "x"})


# --- the validator --------------------------------------------------------------------------------------
# Both ways an image reaches the validator: a PNG it decodes and measures itself, and a PNG whose pixels the
# engine measured before encoding them (encode_checked_png), whose bytes it then checks instead.
@pytest.fixture(params=["decoded", "measured"])
def image_output(request):
    def make(pixels: np.ndarray, chunks: dict[str, str]) -> EngineOutput:
        if request.param == "decoded":
            return output(encode_png(pixels, chunks))
        data, checked = encode_checked_png(pixels, chunks)
        out = output(data)
        out.pixels = checked
        return out

    return make


def test_a_real_picture_of_the_requested_size_with_provenance_passes(image_output):
    out = image_output(noise(), chunks_for(record()))
    validate_image(out, {"width": 32, "height": 32, "seed": 5})
    assert out.facts.content_hash == output_hash(noise())


def output_hash(pixels: np.ndarray) -> str:
    from PIL import Image

    from genforge.media.digests import pixels_digest

    return pixels_digest(Image.fromarray(pixels))


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((32, 32, 3), np.uint8),
        np.full((32, 32, 3), 200, np.uint8),
        np.random.RandomState(1).randint(0, 2, (32, 32, 3)).astype(np.uint8),
    ],
)
def test_constant_and_near_constant_pictures_are_invalid(pixels, image_output):
    with pytest.raises(InvalidOutput, match="constant"):
        validate_image(image_output(pixels, chunks_for(record())), {"width": 32, "height": 32, "seed": 5})


def test_the_wrong_size_is_invalid(image_output):
    with pytest.raises(InvalidOutput, match="64x64 was requested"):
        validate_image(image_output(noise(), chunks_for(record())), {"width": 64, "height": 64, "seed": 5})


def changed(data: bytes, where: str) -> bytes:
    idat = data.index(b"IDAT") + 8
    return {
        "a flipped bit in the image data": data[:idat] + bytes([data[idat] ^ 1]) + data[idat + 1 :],
        "truncated": data[: len(data) // 2],
        "bytes after IEND": data + b"junk",
        "no IEND": data[:-12],
    }[where]


@pytest.mark.parametrize("where", ["a flipped bit in the image data", "truncated", "bytes after IEND", "no IEND"])
def test_a_measured_png_whose_bytes_changed_after_encoding_is_invalid(where):
    data, checked = encode_checked_png(noise(), chunks_for(record()))
    out = output(changed(data, where))
    out.pixels = checked
    with pytest.raises(InvalidOutput, match="does not decode"):
        validate_image(out, {"width": 32, "height": 32, "seed": 5})


def test_a_png_that_is_not_the_image_the_engine_measured_is_invalid():
    _, checked = encode_checked_png(noise(64, 64), chunks_for(record()))
    out = output(encode_png(noise(), chunks_for(record())))
    out.pixels = checked
    with pytest.raises(InvalidOutput, match="not the image the engine measured"):
        validate_image(out, {"width": 32, "height": 32, "seed": 5})


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_bytes_that_do_not_decode_are_invalid(data):
    with pytest.raises(InvalidOutput, match="does not decode"):
        validate_image(output(data), {"width": 32, "height": 32, "seed": 5})


def test_a_png_without_provenance_is_invalid(image_output):
    with pytest.raises(InvalidOutput, match="provenance"):
        validate_image(image_output(noise(), {}), {"width": 32, "height": 32, "seed": 5})


def test_another_media_type_is_invalid():
    out = output(encode_png(noise(), chunks_for(record())))
    out.media_type = "image/jpeg"
    with pytest.raises(InvalidOutput):
        validate_image(out, {"width": 32, "height": 32, "seed": 5})


# --- planning -----------------------------------------------------------------------------------------------
@pytest.fixture
def catalog(tmp_path):
    return open_catalog(make_settings(tmp_path / "data"))


def image_req(**kw) -> GenerateRequest:
    return GenerateRequest(content_type="image", prompt="a cat", **kw)


def test_diffusers_defaults_are_complete_and_the_seed_is_drawn(catalog):
    planned = plan(image_req(), catalog.settings, catalog)
    model, params = planned.model, planned.params.model_dump()
    assert model is None  # no checkpoint installed: the service answers 503 with the ways forward
    assert params["width"] == params["height"] == 512 and params["steps"] == 25
    assert params["guidance_scale"] == 7.5 and params["scheduler"] == "default" and params["negative_prompt"] == ""
    assert isinstance(params["seed"], int) and 0 <= params["seed"] < 2**32


def test_portrait_is_never_the_default_and_gets_its_native_size(catalog):
    assert PACKAGED["portrait"].by_name_only and not PACKAGED["portrait"].prompt_conditioned
    assert catalog.default_for("image") is None
    planned = plan(image_req(model="portrait", params={"seed": 3}), catalog.settings, catalog)
    assert (planned.model, planned.params.model_dump()) == ("portrait", {"width": 1024, "height": 1024, "seed": 3})
    params = plan(image_req(model="portrait", params={"height": 512}), catalog.settings, catalog).params
    assert (params.width, params.height) == (512, 512)


def test_the_maximum_size_and_steps_come_from_settings(tmp_path):
    catalog = open_catalog(make_settings(tmp_path / "d", image_max_size=256, image_max_steps=10))
    with pytest.raises(InvalidRequest, match="over the maximum of 256"):
        plan(image_req(params={"width": 264}), catalog.settings, catalog)
    with pytest.raises(InvalidRequest, match="over the maximum of 10"):
        plan(image_req(params={"width": 256, "height": 256, "steps": 11}), catalog.settings, catalog)
    params = plan(image_req(params={"width": 256, "height": 256, "steps": 10}), catalog.settings, catalog).params
    assert params.steps == 10


def test_the_scheduler_names_are_the_engines():
    assert set(typing.get_args(ImageScheduler)) == {"default", *SCHEDULERS}


# --- checkpoints -----------------------------------------------------------------------------------------------
def test_models_add_accepts_only_image_checkpoints(catalog, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidRequest, match="model_index.json"):
        catalog.add(empty, content_type="image")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InvalidRequest, match="not an image checkpoint"):
        catalog.add(text, content_type="image")
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\xff" * 64)
    with pytest.raises(InvalidRequest, match="safetensors"):
        catalog.add(fake, content_type="image")
    ckpt = tmp_path / "fake.ckpt"
    ckpt.write_bytes(b"hello world")
    with pytest.raises(InvalidRequest, match="PyTorch"):
        catalog.add(ckpt, content_type="image")


def test_a_minimal_safetensors_file_and_a_diffusers_directory_are_accepted(catalog, tmp_path):
    header = b'{"__metadata__":{}}'
    single = tmp_path / "model.safetensors"
    single.write_bytes(len(header).to_bytes(8, "little") + header)
    assert catalog.add(single, content_type="image").engine == "diffusers"
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    info = catalog.add(folder, content_type="image")
    assert (info.name, info.type, info.engine) == ("sd", "image", "diffusers")
    assert catalog.engine_of("sd") == ("diffusers", str(folder))


def test_native_size_is_read_from_the_checkpoint_configs(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "vae").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"sample_size": 128}))
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [128, 256, 512, 512]}))
    assert diffusers_native_size(tmp_path) == 1024  # SDXL: 128 latents x 8
    assert diffusers_native_size(tmp_path / "missing") is None


# --- the portrait engine's own checks (no OpenVINO needed) ------------------------------------------------------
def test_seed_latents_are_deterministic_and_distinct():
    assert np.array_equal(portrait.seed_latent(5), portrait.seed_latent(5))
    assert not np.array_equal(portrait.seed_latent(5), portrait.seed_latent(5 + 2**32))
    with pytest.raises(ValueError):
        portrait.seed_latent(-1)


def test_a_changed_weight_file_is_model_unavailable_before_loading(tmp_path):
    from genforge.config import Settings
    from genforge.core.catalog import ModelCatalog

    path = ModelCatalog(Settings(data_dir=tmp_path), db=None).packaged_path(PACKAGED["portrait"])
    assert path is not None, "random-face is not installed (genforge models pull portrait)"
    copy = tmp_path / "data"
    shutil.copytree(Path(path).parent, copy)
    (copy / "MappingNetwork.xml").write_text("<net/>")
    model = ResolvedModel("portrait", "image", "portrait", str(copy / "SynthesisNetwork.bin"), "x", 1, False)
    with pytest.raises(ModelUnavailable, match="changed"):
        portrait.PortraitEngine().load(model)
