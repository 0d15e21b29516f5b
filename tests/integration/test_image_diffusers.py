"""diffusers through the whole path: a tiny Stable Diffusion pipeline built on the spot (real diffusers code,
random weights), registered with `genforge models add --type image`, generated through HTTP on the torch engine
(GENFORGE_IMAGE_BACKEND=torch; the OpenVINO engine has tests/integration/test_image_openvino.py)."""

from __future__ import annotations

import json

import pytest

from conftest import GENERATE, make_settings, run_cli, running_app, runtime_of, sha256
from genforge.contenttypes.image import ImageRecord
from genforge.contenttypes.request import GenerateRequest
from genforge.core.caller import LOCAL
from genforge.media.files import sha256_path
from genforge.media.images import compare_provenance, read_provenance
from image_fixtures import decode, image_data, pixels_sha256, stats, tiny_sd

MODEL = "tiny-sd"


def body(seed: int = 11, **params) -> dict:
    return {
        "content_type": "image",
        "prompt": "a red bicycle",
        "model": MODEL,
        "params": {"width": 64, "height": 64, "steps": 4, "seed": seed, **params},
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_sd(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("img-diffusers") / "data"


@pytest.fixture(scope="module")
def added(data_dir, checkpoint):
    """`genforge models add DIR --type image --name tiny-sd`, as a user runs it."""
    run = run_cli(data_dir, "models", "add", str(checkpoint), "--type", "image", "--name", MODEL)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def client(data_dir, added):
    with running_app(make_settings(data_dir, preload=False, image_backend="torch")) as client:
        yield client


def generate(client, payload: dict) -> tuple[dict, bytes]:
    resp = client.post(GENERATE, json=payload)
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    got = client.get(rec["artifact"]["url"])
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "image/png"
    return rec, got.content


@pytest.fixture(scope="module")
def first(client):
    return generate(client, body(seed=11))


def test_models_add_registers_the_directory_with_its_hash(client, added, checkpoint):
    assert f"added {MODEL}" in added
    entry = next(m for m in client.get("/api/v1/models").json()["items"] if m["name"] == MODEL)
    assert (entry["type"], entry["engine"], entry["installed"]) == ("image", "diffusers", True)
    assert entry["sha256"] == sha256_path(checkpoint)


def test_generation_through_http_is_a_real_png_with_a_complete_record(first, checkpoint):
    rec, png = first
    assert rec["status"] == "succeeded" and rec["content_type"] == "image" and rec["error"] is None
    assert rec["model"]["name"] == MODEL and rec["model"]["engine"] == "diffusers"
    assert rec["model"]["engine_version"].startswith("diffusers ")
    assert rec["model"]["file_sha256"] == sha256_path(checkpoint)
    assert rec["params"] == {
        "width": 64,
        "height": 64,
        "steps": 4,
        "seed": 11,
        "guidance_scale": 7.5,
        "negative_prompt": "",
        "scheduler": "default",
        "precision": "default",
        "decoder": "full",
        "init_image": None,
        "mask": None,
        "strength": None,
        "loras": [],
    }
    assert rec["image"]["decoder"] == "full" and rec["image"]["decoder_sha256"] is None
    assert set(rec["image"]["stage_ms"]) == {"text_encoder", "denoise", "decoder"}
    assert rec["image"]["backend"] == "torch" and rec["image"]["precision"] == "fp32"
    assert (rec["width"], rec["height"], rec["steps"]) == (64, 64, 4)
    assert rec["image"]["scheduler"] == "EulerDiscreteScheduler" and rec["image"]["device"] in ("cpu", "cuda")
    assert rec["warnings"] == []
    assert rec["timings"]["generate_ms"] > 0 and rec["timings"]["total_ms"] >= rec["timings"]["generate_ms"]
    assert rec["artifact"]["media_type"] == "image/png"
    assert rec["artifact"]["sha256"] == sha256(png) and rec["artifact"]["size_bytes"] == len(png)
    info = stats(png)
    assert info["size"] == (64, 64)
    assert info["std"] > 10, "a real (if random-weight) picture, not a constant one"


def test_the_png_carries_provenance_that_matches_the_record(first):
    rec, png = first
    found = read_provenance(png)
    assert compare_provenance(found, ImageRecord.model_validate(rec)) == []
    assert found["content_id"] == rec["id"] and found["prompt"] == "a red bicycle" and found["seed"] == "11"


def test_same_seed_gives_identical_pixels_and_a_different_seed_differs(client, first):
    rec1, png1 = first
    rec2, png2 = generate(client, body(seed=11))
    assert rec2["id"] != rec1["id"]
    assert pixels_sha256(png2) == pixels_sha256(png1)
    # byte-identical image data: the files differ only in their provenance text (the content id)
    assert image_data(png2) == image_data(png1)
    _, png3 = generate(client, body(seed=12))
    assert pixels_sha256(png3) != pixels_sha256(png1)


def test_progress_events_arrive_once_per_step(client):
    events: list[dict] = []
    req = GenerateRequest(
        content_type="image",
        prompt="a lighthouse",
        model=MODEL,
        params={"width": 64, "height": 64, "steps": 5, "seed": 3},
    )
    rec = runtime_of(client).service.generate(req, LOCAL, emit=events.append)
    assert rec.status == "succeeded"
    progress = [e for e in events if e["type"] == "progress"]
    assert [e["step"] for e in progress] == [1, 2, 3, 4, 5]
    assert all(e["total"] == 5 for e in progress)


def test_progress_streams_over_http_as_server_sent_events(client):
    with client.stream("POST", GENERATE, json={**body(seed=4, steps=3), "stream": True}) as resp:
        assert resp.status_code == 201, resp.read()
        blocks = [b for b in "".join(resp.iter_text()).split("\n\n") if b.strip()]
    progress = [json.loads(b.split("data: ", 1)[1]) for b in blocks if b.startswith("event: progress")]
    assert [(p["step"], p["total"]) for p in progress] == [(1, 3), (2, 3), (3, 3)]
    assert blocks[-1].startswith("event: done")
    assert json.loads(blocks[-1].split("data: ", 1)[1])["status"] == "succeeded"


def test_scheduler_negative_prompt_and_guidance_are_used_and_recorded(client, first):
    _, euler = first
    rec, png = generate(client, body(seed=11, scheduler="ddim", negative_prompt="blurry", guidance_scale=4.0))
    assert rec["params"]["scheduler"] == "ddim" and rec["image"]["scheduler"] == "DDIMScheduler"
    assert rec["params"]["negative_prompt"] == "blurry" and rec["params"]["guidance_scale"] == 4.0
    assert pixels_sha256(png) != pixels_sha256(euler)
    assert compare_provenance(read_provenance(png), ImageRecord.model_validate(rec)) == []


def test_a_request_without_a_model_uses_the_registered_checkpoint_at_its_native_size(client):
    resp = client.post(GENERATE, json={"content_type": "image", "prompt": "a cat", "params": {"steps": 2, "seed": 1}})
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert rec["model"]["name"] == MODEL
    # UNet sample size 32 x VAE scale 2: the checkpoint's own size, read from its config
    assert (rec["params"]["width"], rec["params"]["height"]) == (64, 64)
    assert decode(client.get(rec["artifact"]["url"]).content)[0].size == (64, 64)


def test_a_non_square_size_is_honoured(client):
    rec, png = generate(client, body(seed=5, width=96, height=64, steps=2))
    assert (rec["width"], rec["height"]) == (96, 64)
    assert stats(png)["size"] == (96, 64)
