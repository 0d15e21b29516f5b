"""params.decoder "tiny": the AutoencoderTiny of GENFORGE_IMAGE_TINY_DECODER decodes the latents, on torch and on
OpenVINO (converted and cached under its sha256), through the API. The record and the PNG say which decoder ran;
"tiny" without the setting, with a directory that is no AutoencoderTiny, or with one that does not fit the
checkpoint's latents is a typed error, never the full decoder in its place. Real diffusers code, random weights."""

from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np
import pytest

from conftest import GENERATE, assert_error, failed_record, make_settings, run_cli, running_app, runtime_of
from genforge.contenttypes.image import ImageRecord
from genforge.engines.openvino_diffusers import TINY_FILES, check_entry, tiny_cache_key
from genforge.engines.openvino_diffusers import openvino_version as ov_version
from genforge.media.files import sha256_path
from genforge.media.images import compare_provenance, read_provenance
from image_fixtures import build_tiny_decoder, decode, pixels_sha256, stats, tiny_sd

MODEL = "tiny-sd"
PARAMS = {"width": 64, "height": 64, "steps": 2, "seed": 21}
# Measured: OpenVINO's tiny-decoder image equals torch's after rounding to 8 bits (mean abs difference 0.0 of 255).
MAX_MEAN_ABS_DIFF = 1.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_sd(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_decoder(tmp_path_factory.mktemp("taesd") / "taesd")


def body(**params) -> dict:
    return {"content_type": "image", "prompt": "a red bicycle", "model": MODEL, "params": {**PARAMS, **params}}


def generate(client, **params) -> tuple[dict, bytes]:
    resp = client.post(GENERATE, json=body(**params))
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    return rec, client.get(rec["artifact"]["url"]).content


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(decode(png)[0], dtype=np.float32)


@contextmanager
def app(tmp_path_factory, checkpoint, backend: str, **settings):
    """(client, data dir) of a running app with the tiny checkpoint registered."""
    data = tmp_path_factory.mktemp(f"tiny-{backend}") / "data"
    with running_app(make_settings(data, preload=False, image_backend=backend, **settings)) as client:
        runtime_of(client).catalog.add(checkpoint, name=MODEL, content_type="image")
        yield client, data


@pytest.fixture(scope="module")
def on_torch(tmp_path_factory, checkpoint, tiny):
    with app(tmp_path_factory, checkpoint, "torch", image_tiny_decoder=str(tiny)) as (client, _):
        yield client


@pytest.fixture(scope="module")
def on_openvino(tmp_path_factory, checkpoint, tiny):
    with app(tmp_path_factory, checkpoint, "openvino", image_tiny_decoder=str(tiny)) as running:
        yield running


def check_tiny_record(rec: dict, png: bytes, tiny) -> None:
    assert rec["status"] == "succeeded" and rec["warnings"] == []
    assert rec["params"]["decoder"] == "tiny"
    assert rec["image"]["decoder"] == "tiny" and rec["image"]["decoder_sha256"] == sha256_path(tiny)
    assert rec["image"]["stage_ms"]["decoder"] > 0 and rec["image"]["stage_ms"]["denoise"] > 0
    # the validator passed; the PNG's provenance says the same as the record
    assert stats(png)["size"] == (64, 64) and stats(png)["std"] > 10
    assert compare_provenance(read_provenance(png), ImageRecord.model_validate(rec)) == []
    assert json.loads(read_provenance(png)["params"])["decoder"] == "tiny"
    assert json.loads(read_provenance(png)["image"])["decoder_sha256"] == sha256_path(tiny)


@pytest.fixture(scope="module")
def torch_tiny(on_torch):
    return generate(on_torch, decoder="tiny")


def test_torch_tiny_decoder_makes_a_recorded_deterministic_image(on_torch, torch_tiny, tiny):
    rec, png = torch_tiny
    check_tiny_record(rec, png, tiny)
    assert rec["image"]["backend"] == "torch" and rec["image"]["decoder_cache_key"] is None
    again, again_png = generate(on_torch, decoder="tiny")
    assert pixels_sha256(again_png) == pixels_sha256(png)
    # the full decoder ran for the same seed makes another picture: the tiny one really decoded this
    full, full_png = generate(on_torch)
    assert full["params"]["decoder"] == "full" and full["image"]["decoder"] == "full"
    assert full["image"]["decoder_sha256"] is None
    assert np.abs(pixels(full_png) - pixels(png)).mean() > 5


def test_openvino_converts_caches_and_runs_the_tiny_decoder(on_openvino, torch_tiny, tiny):
    client, data = on_openvino
    rec, png = generate(client, decoder="tiny")
    check_tiny_record(rec, png, tiny)
    key = tiny_cache_key(sha256_path(tiny), ov_version(), "fp32")
    assert rec["image"]["backend"] == "openvino" and rec["image"]["decoder_cache_key"] == key
    expected = {"format": 1, "decoder_sha256": sha256_path(tiny), "openvino": ov_version(), "precision": "fp32"}
    assert check_entry(data / "ov-cache" / key, expected, TINY_FILES) is None
    again, again_png = generate(client, decoder="tiny")
    assert pixels_sha256(again_png) == pixels_sha256(png)
    diff = np.abs(pixels(png) - pixels(torch_tiny[1]))
    assert diff.mean() <= MAX_MEAN_ABS_DIFF, f"mean abs difference {diff.mean():.3f}, max {diff.max()}"
    # back to the full decoder in the same worker: the checkpoint's VAE again, not the tiny one
    full, _ = generate(client)
    assert full["image"]["decoder"] == "full" and full["image"]["decoder_cache_key"] is None


def test_tiny_without_the_setting_is_refused_with_a_hint(tmp_path_factory, checkpoint):
    with app(tmp_path_factory, checkpoint, "torch") as (client, data):
        err = assert_error(client.post(GENERATE, json=body(decoder="tiny")), 422, "invalid_request")
        assert err["field"] == "params.decoder" and "GENFORGE_IMAGE_TINY_DECODER" in err["hint"]
        run = run_cli(data, "generate", "image", "a red bicycle", "--model", MODEL, "--decoder", "tiny")
        assert run.returncode != 0 and "GENFORGE_IMAGE_TINY_DECODER" in run.stdout + run.stderr


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_a_tiny_decoder_for_other_latents_is_a_typed_error(tmp_path_factory, checkpoint, backend):
    wrong = build_tiny_decoder(tmp_path_factory.mktemp(f"wrong-{backend}") / "sixteen", latent_channels=16)
    with app(tmp_path_factory, checkpoint, backend, image_tiny_decoder=str(wrong)) as (client, _):
        resp = client.post(GENERATE, json=body(decoder="tiny"))
        err = assert_error(resp, 503, "model_unavailable")
        assert "16 latent channels" in err["message"] and "makes 4" in err["message"]
        assert "latent space" in err["hint"]
        failed_record(client, resp, "model_unavailable")


def test_a_directory_that_is_no_autoencoder_tiny_is_a_typed_error(tmp_path_factory, checkpoint):
    # the checkpoint's own VAE directory: an AutoencoderKL, not a tiny decoder
    with app(tmp_path_factory, checkpoint, "torch", image_tiny_decoder=str(checkpoint / "vae")) as (client, _):
        resp = client.post(GENERATE, json=body(decoder="tiny"))
        err = assert_error(resp, 503, "model_unavailable")
        assert "AutoencoderKL, not an AutoencoderTiny" in err["message"]
        assert "GENFORGE_IMAGE_TINY_DECODER" in err["hint"]
        failed_record(client, resp, "model_unavailable")
