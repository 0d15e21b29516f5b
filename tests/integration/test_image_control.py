"""Image control through real HTTP: uploads (limits, hostile files, ownership), img2img and inpainting on the
torch diffusers engine with a tiny pipeline built on the spot, LoRAs (diffusers and kohya layouts) at weight 0 and
1 with their sha256 recorded, OpenAI's /v1/images/edits, and a persona's face measured with dlib on the packaged
portrait model's faces."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from PIL import Image

from conftest import DISTRIBUTED, GENERATE, assert_bad_input, assert_error, make_settings, run_cli, running_app
from image_fixtures import build_tiny_lora, decode, png_bytes, tiny_sd

pytestmark = pytest.mark.both_modes
MODEL = "tiny-sd"
UPLOADS = "/api/v1/uploads"


def body(seed: int = 3, **params) -> dict:
    return {
        "content_type": "image",
        "prompt": "a lighthouse at dusk",
        "model": MODEL,
        "params": {"width": 64, "height": 64, "steps": 4, "seed": seed, **params},
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    checkpoint = tiny_sd(root)
    lora = build_tiny_lora(checkpoint, root / "tiny-lora.safetensors")
    kohya = build_tiny_lora(checkpoint, root / "tiny-kohya.safetensors", kohya=True, seed=6)
    return checkpoint, lora, kohya


@pytest.fixture(scope="module")
def client(tmp_path_factory, files):
    data_dir = tmp_path_factory.mktemp("img-control") / "data"
    checkpoint, lora, kohya = files
    # `genforge models add` as a user runs it (its database is the embedded mode's; the distributed mode's
    # PostgreSQL gets the same registrations through the app's catalog below)
    run = run_cli(data_dir, "models", "add", str(lora), "--type", "lora", "--name", "tiny-lora")
    assert run.returncode == 0, run.stdout + run.stderr
    settings = make_settings(data_dir, preload=False, image_backend="torch", upload_max_bytes=300_000)
    with running_app(settings) as client:
        catalog = client.app.state.runtime.catalog
        catalog.add(checkpoint, MODEL, "image")
        catalog.add(lora, "tiny-lora", "lora")
        catalog.add(kohya, "tiny-kohya", "lora")
        yield client


def generate(client, payload: dict) -> tuple[dict, np.ndarray]:
    resp = client.post(GENERATE, json=payload)
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    got = client.get(rec["artifact"]["url"])
    assert got.status_code == 200
    return rec, np.asarray(decode(got.content)[0], dtype=np.float32)


def upload(client, data: bytes, name: str = "x.png", headers: dict | None = None):
    return client.post(UPLOADS, files={"file": (name, data, "application/octet-stream")}, headers=headers or {})


@pytest.fixture(scope="module")
def base(client):
    return generate(client, body())


# --- uploads ------------------------------------------------------------------------------------------------
def test_uploads_are_reencoded_png_without_exif_and_content_addressed(client):
    rgb = np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0112] = 6  # Orientation: rotated 90 degrees clockwise
    jpeg = png_bytes(rgb, "JPEG", exif=exif.tobytes(), quality=95)
    resp = upload(client, jpeg, "photo.jpg")
    assert resp.status_code == 201, resp.text
    up = resp.json()
    assert set(up) >= {"id", "sha256", "media_type", "width", "height"}
    assert (up["media_type"], up["original_media_type"]) == ("image/png", "image/jpeg")
    assert (up["width"], up["height"]) == (40, 48)  # the EXIF orientation applied: 48x40 turned upright
    stored = (client.app.state.runtime.settings.uploads_dir / up["sha256"][:2] / f"{up['sha256']}.png").read_bytes()
    assert (
        stored.startswith(b"\x89PNG") and b"SecretCam" not in stored and b"eXIf" not in stored and b"Exif" not in stored
    )
    again = upload(client, jpeg, "copy.jpg").json()
    assert again["sha256"] == up["sha256"] and again["id"] != up["id"]
    webp = upload(client, png_bytes(rgb, "WEBP", lossless=True), "a.webp").json()
    assert webp["original_media_type"] == "image/webp"
    assert client.get(f"{UPLOADS}/{up['id']}").json()["sha256"] == up["sha256"]


def test_hostile_uploads_are_refused(client):
    bomb = Image.new("1", (30_000, 30_000))  # 900 megapixels, a few KB as PNG
    assert_error(upload(client, png_bytes(bomb)), 413, "payload_too_large")
    whole = png_bytes(np.full((64, 64, 3), 7, dtype=np.uint8))
    truncated = png_bytes(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8))[:-200]
    assert_bad_input(upload(client, truncated), "file")
    assert_bad_input(upload(client, b"#!/bin/sh\necho not a picture\n", "evil.png"), "file")
    assert_bad_input(upload(client, png_bytes(Image.new("RGB", (16, 16)), "GIF"), "a.gif"), "file")
    assert upload(client, whole, "actually-a-png.jpg").status_code == 201  # the content decides, not the name
    big = np.random.default_rng(3).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    assert_error(upload(client, png_bytes(big)), 413, "payload_too_large")  # over upload_max_bytes
    assert_error(client.get(f"{UPLOADS}/no-such-upload"), 404, "not_found")


# --- img2img and inpainting -----------------------------------------------------------------------------------
def test_img2img_depends_on_its_init_image_and_records_it(client, base):
    rec, _ = base
    other, _ = generate(client, body(seed=4))
    b1, p1 = generate(client, body(init_image=rec["id"], strength=0.6))
    b2, p2 = generate(client, body(init_image=other["id"], strength=0.6))
    assert abs(p1 - p2).mean() > 0.5
    assert b1["params"]["init_image"] == rec["id"] and b1["params"]["strength"] == 0.6
    assert b1["image"]["mode"] == "img2img" and b1["image"]["pipeline"] == "StableDiffusionImg2ImgPipeline"
    assert b1["inputs"] == [
        {"role": "init_image", "content_id": rec["id"], "upload_id": None, "sha256": rec["artifact"]["sha256"]}
    ]
    creds = client.get(f"/api/v1/content/{b1['id']}/credentials").json()
    assert rec["id"] in json.dumps(creds)  # the manifest lists its input
    default = generate(client, body(init_image=rec["id"]))[0]
    assert default["params"]["strength"] == 0.75


def test_inpainting_keeps_the_unmasked_pixels(client, base):
    rec, original = base
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    up = upload(client, png_bytes(mask)).json()
    inpainted, pixels = generate(client, body(init_image=rec["id"], mask=up["id"]))
    assert inpainted["params"]["strength"] == 1.0 and inpainted["image"]["mode"] == "inpaint"
    assert abs(pixels[:, :32] - original[:, :32]).max() == 0  # pasted back: not a pixel moved
    assert abs(pixels[:, 32:] - original[:, 32:]).mean() > 3
    assert {"role": "mask", "content_id": None, "upload_id": up["id"], "sha256": up["sha256"]} in inpainted["inputs"]


def test_planning_refuses_what_cannot_run(client, base):
    rec = base[0]
    assert_bad_input(client.post(GENERATE, json=body(mask=rec["id"])), "params.mask")
    assert_bad_input(client.post(GENERATE, json=body(strength=0.5)), "params.strength")
    assert_bad_input(client.post(GENERATE, json=body(init_image=rec["id"], strength=0.1)), "params.strength")
    assert_bad_input(client.post(GENERATE, json=body(reference_images=[rec["id"]])), "params.reference_images")
    assert_bad_input(client.post(GENERATE, json=body(loras=[{"name": "nope"}])), "params.loras.0.name")
    assert_bad_input(client.post(GENERATE, json=body(loras=[{"name": MODEL}])), "params.loras.0.name")
    speech = {"content_type": "image", "model": "portrait", "prompt": "x", "params": {"init_image": rec["id"]}}
    assert_bad_input(client.post(GENERATE, json=speech), "params.init_image")


# --- LoRA -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny-lora", "tiny-kohya"])
def test_lora_weight_zero_is_the_base_model_and_one_is_not(client, base, files, name):
    _, original = base
    path = files[1] if name == "tiny-lora" else files[2]
    sha = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    l0, p0 = generate(client, body(loras=[{"name": name, "weight": 0.0}]))
    l1, p1 = generate(client, body(loras=[{"name": name, "weight": 1.0}]))
    assert abs(p0 - original).mean() < 1
    assert abs(p1 - original).mean() > 1
    assert l1["params"]["loras"] == [{"name": name, "weight": 1.0, "sha256": sha}]
    assert l1["image"]["loras"] == [{"name": name, "weight": 1.0, "sha256": sha}]
    # sent again with its sha256, the same picture; the base model after it is unchanged (the LoRA unloaded)
    again, pa = generate(client, {**body(), "params": l1["params"]})
    assert abs(pa - p1).max() == 0
    assert abs(generate(client, body())[1] - original).max() == 0


def test_models_list_shows_loras(client):
    names = {m["name"]: m for m in client.get("/api/v1/models").json()["items"]}
    assert names["tiny-lora"]["type"] == "lora" and len(names["tiny-lora"]["sha256"]) == 64


# --- /v1/images/edits ---------------------------------------------------------------------------------------------
def test_openai_images_edit(client, base):
    from openai import OpenAI

    rec, original = base
    png = client.get(rec["artifact"]["url"]).content
    sdk = OpenAI(base_url="http://localhost/v1", api_key="unused", http_client=client)
    r = sdk.images.edit(model=MODEL, image=("a.png", png), prompt="at night", size="64x64", response_format="b64_json")
    im = decode(base64.b64decode(r.data[0].b64_json))[0]
    assert im.size == (64, 64)
    # OpenAI's mask convention: transparent = repaint (here the right half)
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (32, 0, 64, 64))
    r = sdk.images.edit(
        model=MODEL,
        image=("a.png", png),
        mask=("m.png", png_bytes(mask)),
        prompt="x",
        size="64x64",
        response_format="b64_json",
    )
    pixels = np.asarray(decode(base64.b64decode(r.data[0].b64_json))[0], dtype=np.float32)
    assert abs(pixels[:, :32] - original[:, :32]).max() == 0
    bad = client.post("/v1/images/edits", files={"image": ("a.png", png)}, data={"prompt": "x", "quality": "hd"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "quality"


# --- a persona's face, measured ------------------------------------------------------------------------------------
def test_persona_identity_accepts_its_face_and_refuses_another(client):
    ref = generate(
        client, {"content_type": "image", "model": "portrait", "prompt": "x", "params": {"seed": 42, "width": 256}}
    )[0]
    persona = {
        "name": "mira",
        "image": {
            "model": "portrait",
            "seed": 42,
            "width": 256,
            "reference_images": [ref["id"]],
            "identity": {"attempts": 1},
        },
    }
    assert client.post("/api/v1/personas", json=persona).status_code == 201
    same = generate(client, {"content_type": "image", "persona": "mira", "prompt": "x"})[0]
    ident = same["identity"]
    assert ident["similarity"] > 0.9 and ident["threshold"] == 0.65 and ident["reference"] == [ref["id"]]
    assert "dlib" in ident["model"]
    creds = client.get(f"/api/v1/content/{same['id']}/credentials").json()
    assert "similarity" in json.dumps(creds)
    resp = client.post(
        GENERATE, json={"content_type": "image", "persona": "mira", "prompt": "x", "params": {"seed": 44}}
    )
    err = assert_error(resp, 502, "policy_violation")
    assert "similarity 0." in err["message"]
    if not DISTRIBUTED:  # a worker's error comes back from the record: code, message and hint, no details
        assert err["similarity"] < 0.65
    failed = client.get(f"/api/v1/content/{err['content_id']}").json()
    assert len(failed["attempts"]) == 1 and "similarity" in failed["attempts"][0]["message"]
    # an identity policy needs a face to compare with, and references the writer may use
    assert_bad_input(
        client.post("/api/v1/personas", json={"name": "nofa", "image": {"identity": {}}}), "image.identity"
    )
    assert_bad_input(
        client.post("/api/v1/personas", json={"name": "nofb", "image": {"reference_images": ["nope"]}}),
        "image.reference_images.0",
    )


# --- ownership (last: once a key exists, every request needs one) ---------------------------------------------
def test_another_keys_upload_answers_like_an_unknown_one(client, base):
    keys = client.app.state.auth.keys
    a = {"Authorization": f"Bearer {keys.create('images-a', 'generate')[1]}"}
    b = {"Authorization": f"Bearer {keys.create('images-b', 'generate')[1]}"}
    try:
        mine = upload(client, png_bytes(np.full((64, 64, 3), 90, dtype=np.uint8)), headers=a).json()
        assert client.get(f"{UPLOADS}/{mine['id']}", headers=a).status_code == 200
        assert_error(client.get(f"{UPLOADS}/{mine['id']}", headers=b), 404, "not_found")
        theirs = client.post(GENERATE, json=body(init_image=mine["id"]), headers=b)
        unknown = client.post(GENERATE, json=body(init_image="no-such-id"), headers=b)
        assert theirs.status_code == unknown.status_code == 422
        assert theirs.json()["error"]["message"].replace(mine["id"], "ID") == unknown.json()["error"][
            "message"
        ].replace("no-such-id", "ID")
        # another key's image record is no init image either (the operator made `base`)
        assert_bad_input(client.post(GENERATE, json=body(init_image=base[0]["id"]), headers=b), "params.init_image")
    finally:
        keys.revoke("images-a")
        keys.revoke("images-b")


@pytest.mark.only_in("embedded", reason="genforge backup copies a SQLite database")
def test_backup_and_restore_carry_the_uploads(client, tmp_path):
    from genforge.stores.backup import backup, restore

    settings = client.app.state.runtime.settings
    up = upload(client, png_bytes(np.full((32, 32, 3), 200, dtype=np.uint8)), headers=_admin(client)).json()
    manifest = backup(settings, tmp_path / "bk")
    assert manifest["uploads"] >= 1 and not [m for m in manifest["missing"] if m.startswith("uploads/")]
    target = make_settings(tmp_path / "restored")
    restored = restore(target, tmp_path / "bk")
    assert restored["uploads"] == manifest["uploads"]
    assert (target.uploads_dir / up["sha256"][:2] / f"{up['sha256']}.png").is_file()


def _admin(client) -> dict:
    return {"Authorization": f"Bearer {client.app.state.auth.keys.create('images-admin', 'admin')[1]}"}


def test_openvino_backend_runs_image_control_on_torch_under_auto_and_refuses_it_when_chosen(app_with, files):
    checkpoint, lora, _ = files
    picture = png_bytes(np.random.default_rng(4).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    auto = app_with(preload=False, image_backend="auto", image_device="cpu")  # CPU: the OpenVINO engine
    auto.app.state.runtime.catalog.add(checkpoint, MODEL, "image")
    init = upload(auto, picture).json()["id"]
    rec, _ = generate(auto, body(init_image=init, strength=0.5))
    assert rec["model"]["engine"] == "diffusers" and rec["image"]["backend"] == "torch"
    assert any("ran on torch" in w and "img2img" in w for w in rec["warnings"])
    chosen = app_with(preload=False, image_backend="openvino")
    chosen.app.state.runtime.catalog.add(checkpoint, MODEL, "image")
    chosen.app.state.runtime.catalog.add(lora, "tiny-lora", "lora")
    init = upload(chosen, picture).json()["id"]
    err = assert_bad_input(chosen.post(GENERATE, json=body(init_image=init)), "params.init_image")
    assert "openvino" in err["message"]
    assert_bad_input(chosen.post(GENERATE, json=body(loras=[{"name": "tiny-lora"}])), "params.loras")
