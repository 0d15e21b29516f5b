"""Image faults are reported, never hidden: a missing checkpoint is 503, a black picture is 502 with no
file, a bad size or step count is 422 with no record; nothing falls back to another model."""

from __future__ import annotations

import shutil

import pytest

from conftest import (
    CONTENT,
    GENERATE,
    assert_bad_input,
    assert_error,
    count,
    failed_record,
    files_under,
    make_settings,
    running_app,
    runtime_of,
)
from image_fixtures import copy_checkpoint, tiny_sd

MODEL = "tiny-sd"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("img-faults"), preload=False, image_backend="torch")
    with running_app(settings) as client:
        yield client


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_sd(tmp_path_factory.getbasetemp())


def image(model: str | None = MODEL, **params) -> dict:
    body = {
        "content_type": "image",
        "prompt": "a red bicycle",
        "params": {"width": 64, "height": 64, "steps": 2, "seed": 1, **params},
    }
    if model:
        body["model"] = model
    return body


def artifacts(client) -> list:
    return files_under(runtime_of(client).settings.artifacts_dir)


def test_no_checkpoint_and_no_model_named_is_503_naming_both_ways_forward(client):
    # the portrait model is installed here, and still never chosen for a request that does not name it
    assert "portrait" in runtime_of(client).catalog.installed_names("image")
    resp = client.post(GENERATE, json=image(model=None))
    err = assert_error(resp, 503, "model_unavailable")
    assert "genforge models add PATH --type image" in err["hint"]
    assert '"model": "portrait"' in err["hint"]
    failed_record(client, resp, "model_unavailable")
    assert artifacts(client) == []


def test_checkpoint_deleted_after_registration_is_503_and_a_failed_record(client, tiny, tmp_path):
    path = copy_checkpoint(tiny, tmp_path / "vanishing-sd")
    runtime_of(client).catalog.add(path, name="vanishing-sd", content_type="image")
    shutil.rmtree(path)

    resp = client.post(GENERATE, json=image(model="vanishing-sd"))
    err = assert_error(resp, 503, "model_unavailable")
    assert "missing" in err["message"]
    rec = failed_record(client, resp, "model_unavailable")
    assert rec["model"]["name"] == "vanishing-sd" and rec["content_type"] == "image"
    assert artifacts(client) == []


def test_a_pipeline_that_outputs_all_black_is_502_invalid_output_with_no_artifact(client, tmp_path_factory):
    black = tiny_sd(tmp_path_factory.getbasetemp(), black=True)
    runtime_of(client).catalog.add(black, name="black-sd", content_type="image")
    before = count(client, status="succeeded")

    resp = client.post(GENERATE, json=image(model="black-sd"))
    err = assert_error(resp, 502, "invalid_output")
    assert "constant" in err["message"]
    rec = failed_record(client, resp, "invalid_output")
    assert rec["model"]["engine"] == "diffusers"
    assert artifacts(client) == []
    assert count(client, status="succeeded") == before


def test_a_single_file_checkpoint_without_local_configs_is_503_not_a_download(client, tiny, tmp_path):
    single = tmp_path / "unet-only.safetensors"
    shutil.copyfile(tiny / "unet" / "diffusion_pytorch_model.safetensors", single)
    runtime_of(client).catalog.add(single, name="single-file", content_type="image")

    resp = client.post(GENERATE, json=image(model="single-file"))
    err = assert_error(resp, 503, "model_unavailable")
    assert "single-file" in err["message"]
    assert "diffusers directory" in err["hint"]
    failed_record(client, resp, "model_unavailable")


def test_the_engine_worker_still_generates_after_the_failures(client, tiny):
    runtime_of(client).catalog.add(tiny, name=MODEL, content_type="image")
    resp = client.post(GENERATE, json=image())
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "succeeded"


@pytest.mark.parametrize(
    "params, field",
    [
        ({"width": 0}, "params.width"),
        ({"height": 0}, "params.height"),
        ({"width": 60}, "params.width"),  # not a multiple of 8
        ({"height": 100}, "params.height"),
        ({"width": 2056}, "params.width"),  # over GENFORGE_IMAGE_MAX_SIZE (2048)
        ({"width": -64}, "params.width"),
        ({"steps": 0}, "params.steps"),
        ({"steps": 151}, "params.steps"),  # over GENFORGE_IMAGE_MAX_STEPS (150)
        ({"steps": 2.5}, "params.steps"),
        ({"width": "64"}, "params.width"),
        ({"steps": True}, "params.steps"),
        ({"guidance_scale": -1}, "params.guidance_scale"),
        ({"scheduler": "warp-drive"}, "params.scheduler"),
        ({"seed": -1}, "params.seed"),
        ({"colour": "red"}, "params.colour"),
    ],
)
def test_bad_sizes_and_steps_are_422_without_a_record(client, tiny, params, field):
    runtime_of(client).catalog.add(tiny, name=MODEL, content_type="image")
    total = count(client)
    assert_bad_input(client.post(GENERATE, json=image(**params)), field)
    assert count(client) == total


@pytest.mark.parametrize(
    "params, field",
    [
        ({"width": 300, "height": 300}, "params.width"),
        ({"width": 256, "height": 512}, "params.height"),
        ({"width": 64, "height": 64}, "params.width"),
        ({"steps": 10}, "params.steps"),
        ({"guidance_scale": 7.5}, "params.guidance_scale"),
        ({"negative_prompt": "hats"}, "params.negative_prompt"),
        ({"scheduler": "ddim"}, "params.scheduler"),
    ],
)
def test_portrait_refuses_what_it_cannot_honour_with_422(client, params, field):
    total = count(client)
    body = {"content_type": "image", "prompt": "a face", "model": "portrait", "params": {"seed": 1, **params}}
    assert_bad_input(client.post(GENERATE, json=body), field)
    assert count(client) == total


def test_an_image_request_naming_a_text_model_is_422(client):
    body = {"content_type": "image", "prompt": "a face", "model": "smollm2-135m-instruct"}
    assert_bad_input(client.post(GENERATE, json=body), "model")


def test_a_system_prompt_is_refused_for_images(client):
    body = {**image(), "system": "you are a painter"}
    assert_bad_input(client.post(GENERATE, json=body), "system")


def test_settings_that_would_have_no_effect_are_refused(client, tiny):
    runtime_of(client).catalog.add(tiny, name=MODEL, content_type="image")
    assert_bad_input(client.post(GENERATE, json={**image(), "quality": "high"}), "quality")
    assert_bad_input(
        client.post(GENERATE, json=image(negative_prompt="fog", guidance_scale=1)), "params.negative_prompt"
    )


def test_the_configured_maximum_size_applies(tmp_path, tiny):
    settings = make_settings(tmp_path / "small", preload=False, image_max_size=64, image_backend="torch")
    with running_app(settings) as small:
        runtime_of(small).catalog.add(tiny, name=MODEL, content_type="image")
        err = assert_bad_input(small.post(GENERATE, json=image(width=72)), "params.width")
        assert "64" in err["message"]
        assert small.get(CONTENT).json()["total"] == 0
