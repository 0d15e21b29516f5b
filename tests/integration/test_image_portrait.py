"""The portrait engine (MobileStyleGAN from the random-face wheel, run with OpenVINO) through HTTP and the CLI:
real faces, the same face for the same seed (also in another process), the warning that the prompt is
ignored, provenance that `genforge verify` checks, and a re-encoded or edited file reported as not ours."""

from __future__ import annotations

import io
import re
import zlib

import pytest

from conftest import GENERATE, make_settings, run_cli, running_app, runtime_of, sha256, validate_output
from genforge.contenttypes.image import ImageRecord
from genforge.contenttypes.request import GenerateRequest
from genforge.core.caller import LOCAL
from genforge.core.catalog import PACKAGED
from genforge.engines.base import EngineOutput, ImageFacts
from genforge.media.images import compare_provenance, encode_png, read_provenance
from image_fixtures import PROMPT_WARNING, decode, image_data, pixels_sha256, stats

ID = re.compile(r"content id: ([0-9a-f-]{36})")
FILE = re.compile(r"file: (\S+\.png)")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with running_app(make_settings(tmp_path_factory.mktemp("img-portrait"), preload=False)) as client:
        yield client


def portrait(client, seed: int, prompt: str = "a smiling woman", **params) -> tuple[dict, bytes]:
    resp = client.post(
        GENERATE,
        json={"content_type": "image", "prompt": prompt, "model": "portrait", "params": {"seed": seed, **params}},
    )
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    got = client.get(rec["artifact"]["url"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert sha256(got.content) == rec["artifact"]["sha256"]
    return rec, got.content


@pytest.fixture(scope="module")
def seven(client):
    return portrait(client, 7, width=256)


def test_a_portrait_through_http_is_a_real_face_with_a_complete_record(seven):
    rec, png = seven
    assert rec["status"] == "succeeded" and rec["content_type"] == "image"
    assert rec["model"]["name"] == "portrait" and rec["model"]["engine"] == "portrait"
    assert rec["model"]["file_sha256"] == PACKAGED["portrait"].sha256
    assert rec["model"]["engine_version"].startswith("openvino ")
    assert rec["params"] == {"width": 256, "height": 256, "seed": 7}
    assert (rec["width"], rec["height"], rec["steps"]) == (256, 256, 3)
    assert rec["image"]["native_size"] == 1024 and rec["image"]["downscaled"] is True
    info = stats(png)
    assert info["size"] == (256, 256)
    assert info["std"] > 10


def test_the_record_warns_that_the_prompt_is_ignored(seven):
    rec, png = seven
    assert rec["warnings"] == [PROMPT_WARNING]
    assert read_provenance(png)["warning"] == PROMPT_WARNING


def test_the_image_passes_the_validator_and_carries_matching_provenance(seven):
    rec, png = seven
    out = EngineOutput(
        data=png, media_type="image/png", engine_version="", load_ms=0, generate_ms=0, facts=ImageFacts()
    )
    validate_output("image", out, rec["params"], rec["prompt"])
    assert compare_provenance(read_provenance(png), ImageRecord.model_validate(rec)) == []


def test_same_seed_same_face_and_the_prompt_changes_nothing(client, seven):
    _, png = seven
    _, again = portrait(client, 7, prompt="a red bicycle", width=256)
    assert pixels_sha256(again) == pixels_sha256(png)
    assert image_data(again) == image_data(png)
    _, other = portrait(client, 8, width=256)
    assert pixels_sha256(other) != pixels_sha256(png)


def test_faces_are_rgb_not_bgr(client, seven):
    """Skin is warm: red outweighs blue over several seeds (swapped channels give blue faces)."""
    _, png = seven
    pngs = [png] + [portrait(client, seed, width=256)[1] for seed in (1, 3)]
    assert sum(stats(p)["red_minus_blue"] for p in pngs) > 0


def test_the_native_size_is_the_default(client):
    rec, png = portrait(client, 42)
    assert rec["params"] == {"width": 1024, "height": 1024, "seed": 42}
    assert rec["image"]["downscaled"] is False
    assert decode(png)[0].size == (1024, 1024)


def test_progress_reports_each_stage(client):
    events: list[dict] = []
    req = GenerateRequest(content_type="image", prompt="x", model="portrait", params={"seed": 2, "width": 256})
    runtime_of(client).service.generate(req, LOCAL, emit=events.append)
    assert [(e["step"], e["total"]) for e in events if e["type"] == "progress"] == [(1, 3), (2, 3), (3, 3)]


def test_the_catalog_says_it_ignores_the_prompt_and_states_its_licence(client):
    entry = next(m for m in client.get("/api/v1/models").json()["items"] if m["name"] == "portrait")
    assert entry["type"] == "image" and entry["installed"] is True
    assert entry["prompt_conditioned"] is False
    assert "NON-COMMERCIAL" in entry["license"] and "StyleGAN2" in entry["license"]


# --- the CLI, in its own process: the same seed gives the same face there too ------------------------
@pytest.fixture(scope="module")
def cli_data(tmp_path_factory):
    return tmp_path_factory.mktemp("img-portrait-cli") / "data"


@pytest.fixture(scope="module")
def cli_run(cli_data):
    run = run_cli(
        cli_data,
        "generate",
        "image",
        "a portrait of a sailor",
        "--model",
        "portrait",
        "--seed",
        "7",
        "--width",
        "256",
        "--height",
        "256",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_cli_generate_image_prints_the_id_and_the_file(cli_run, cli_data):
    content_id = ID.search(cli_run.stdout).group(1)
    path = FILE.search(cli_run.stdout).group(1)
    assert path.startswith(str(cli_data))
    png = open(path, "rb").read()
    assert read_provenance(png)["content_id"] == content_id
    assert "ignores the prompt" in cli_run.stderr
    show = run_cli(cli_data, "content", "show", content_id)
    assert '"status": "succeeded"' in show.stdout


def test_cli_and_http_give_the_same_face_for_the_same_seed(cli_run, seven):
    png = open(FILE.search(cli_run.stdout).group(1), "rb").read()
    assert pixels_sha256(png) == pixels_sha256(seven[1])


def test_verify_confirms_the_png_and_its_provenance(cli_run, cli_data):
    run = run_cli(cli_data, "verify", FILE.search(cli_run.stdout).group(1))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "genforge artifact" in run.stdout
    assert "provenance matches the record" in run.stdout
    assert ID.search(cli_run.stdout).group(1) in run.stdout


def test_verify_finds_a_re_encoded_copy_by_its_pixels_as_unsigned(cli_run, cli_data, tmp_path):
    original = open(FILE.search(cli_run.stdout).group(1), "rb").read()
    image, text = decode(original)
    copy = tmp_path / "re-encoded.png"
    copy.write_bytes(encode_png(image, text, compress_level=6, compress_type=zlib.Z_DEFAULT_STRATEGY))
    assert copy.read_bytes() != original and pixels_sha256(copy.read_bytes()) == pixels_sha256(original)
    run = run_cli(cli_data, "verify", str(copy))
    # Re-encoding drops the Content Credentials; the same pixels still lead to the record (exit 0, unsigned).
    assert run.returncode == 0, run.stdout
    assert "credentials: unsigned" in run.stdout and "re-encoded" in run.stdout
    assert ID.search(cli_run.stdout).group(1) in run.stdout


def test_verify_reports_an_edited_image_as_not_matching(cli_run, cli_data, tmp_path):
    image, text = decode(open(FILE.search(cli_run.stdout).group(1), "rb").read())
    image.putpixel((10, 10), (0, 255, 0))
    edited = tmp_path / "edited.png"
    edited.write_bytes(encode_png(image, {**text, "genforge:seed": "8"}))
    run = run_cli(cli_data, "verify", str(edited))
    assert run.returncode == 1, run.stdout
    assert "not matching" in run.stdout


def test_verify_rejects_a_png_genforge_never_made(cli_data, tmp_path):
    from PIL import Image

    stranger = tmp_path / "stranger.png"
    buf = io.BytesIO()
    Image.effect_noise((32, 32), 50).convert("RGB").save(buf, format="PNG")
    stranger.write_bytes(buf.getvalue())
    run = run_cli(cli_data, "verify", str(stranger))
    assert run.returncode == 1 and "not a genforge artifact" in run.stdout


def test_cli_refuses_a_size_the_portrait_model_cannot_make(cli_data):
    run = run_cli(cli_data, "generate", "image", "x", "--model", "portrait", "--width", "300", "--height", "300")
    assert run.returncode == 2
    assert "params.width" in run.stderr


def test_models_list_states_the_licence_and_that_the_prompt_is_ignored(cli_data):
    run = run_cli(cli_data, "models", "list")
    assert run.returncode == 0, run.stderr
    assert "NON-COMMERCIAL" in run.stdout
    assert "portrait ignores the prompt" in run.stdout
