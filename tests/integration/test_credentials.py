"""Content Credentials on real artifacts (the packaged portrait model, the Piper voice, SmolLM2): manifests that
c2pa-python's reader validates, the verdicts of `genforge verify` (valid, tampered, foreign, unsigned), records
found again by their pixels or samples after the metadata was stripped, a broken key failing the generation,
and GENFORGE_CREDENTIALS=off recorded as such."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import stat
import wave
from pathlib import Path

import pytest

from conftest import GENERATE, files_under, make_settings, run_cli, running_app, sha256, text_body, validate_output
from genforge.engines.base import EngineOutput, ImageFacts
from genforge.stores.credentials import ASSERTION, TRAINED_ALGORITHMIC_MEDIA, Credentials, canonical
from speech_fixtures import needs_piper

c2pa = pytest.importorskip("c2pa", reason="c2pa-python is not installed")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("credentials")
    with running_app(make_settings(data, preload=False)) as client:
        yield client, data


def made(app, body: dict) -> tuple[dict, bytes, Path]:
    """Generate through the API; the record, the served file, and that file written where a user keeps it."""
    client, data = app
    resp = client.post(GENERATE, json=body)
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    raw = client.get(rec["artifact"]["url"]).content
    assert sha256(raw) == rec["artifact"]["sha256"], "the record hashes the final, signed file"
    suffix = {"image": ".png", "speech": ".wav", "text": ".txt"}[rec["content_type"]]
    path = data.parent / f"{data.name}-{rec['id']}{suffix}"
    path.write_bytes(raw)
    return rec, raw, path


@pytest.fixture(scope="module")
def image(app):
    return made(app, {"content_type": "image", "model": "portrait", "prompt": "a face", "params": {"seed": 7}})


@pytest.fixture(scope="module")
def speech(app):
    return made(app, {"content_type": "speech", "prompt": "Signed speech from genforge, twenty words or so."})


@pytest.fixture(scope="module")
def text(app):
    return made(app, text_body("Name a bird.", max_tokens=8))


def read_manifest(raw: bytes, media_type: str, context=None) -> tuple[str, dict]:
    with c2pa.Reader(media_type, io.BytesIO(raw), context=context) as reader:
        return reader.get_validation_state(), json.loads(reader.json())


def verify(app, path: Path):
    return run_cli(app[1], "verify", str(path))


def check_manifest(rec: dict, raw: bytes, media_type: str) -> None:
    state, store = read_manifest(raw, media_type)
    assert state in ("Valid", "Trusted"), store.get("validation_status")
    assert store["active_manifest"] == rec["credentials"]["manifest_label"]
    manifest = store["manifests"][store["active_manifest"]]
    text = json.dumps(manifest)
    assert TRAINED_ALGORITHMIC_MEDIA in text and "c2pa.created" in text
    assert manifest["claim_generator_info"][0]["name"] == "genforge"
    (ours,) = [a["data"] for a in manifest["assertions"] if a["label"] == ASSERTION]
    assert ours["content_id"] == rec["id"]
    assert ours["model"] == {"name": rec["model"]["name"], "engine": rec["model"]["engine"],
                             "sha256": rec["model"]["file_sha256"]}  # fmt: skip
    assert ours["seed"] == rec["params"]["seed"]
    assert ours["params_sha256"] == hashlib.sha256(canonical(rec["params"])).hexdigest()
    assert rec["credentials"]["signed"] is True and len(rec["credentials"]["signer_sha256"]) == 64
    assert len(rec["content_hash"]) == 64


def test_the_signed_portrait_carries_a_valid_manifest_and_still_passes_the_validator(image):
    rec, raw, _ = image
    check_manifest(rec, raw, "image/png")
    out = EngineOutput(raw, "image/png", "x", 0, 0, ImageFacts())  # still a valid PNG with its provenance
    validate_output("image", out, rec["params"], rec["prompt"])


@needs_piper
def test_the_signed_wav_carries_a_valid_manifest(speech):
    rec, raw, _ = speech
    check_manifest(rec, raw, "audio/wav")
    with wave.open(io.BytesIO(raw)) as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(rec["duration_s"], abs=0.001)


def test_the_exported_root_makes_the_manifest_trusted(app, image, tmp_path):
    run = run_cli(app[1], "credentials", "export-ca", str(tmp_path / "root.pem"))
    assert run.returncode == 0, run.stderr
    root = (tmp_path / "root.pem").read_text()
    assert root.startswith("-----BEGIN CERTIFICATE-----")
    context = c2pa.Context.from_dict({"trust": {"trust_anchors": root}, "verify": {"verify_trust": True}})
    assert read_manifest(image[1], "image/png", context)[0] == "Trusted"
    keystore = app[1] / "credentials" / "keystore.json"
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600, "the private keys are readable by others"


def test_verify_says_valid_for_our_signed_files(app, image, speech):
    for _, _, path in (image, speech):
        run = verify(app, path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "credentials: valid" in run.stdout
    assert "provenance matches the record" in verify(app, image[2]).stdout


@pytest.mark.parametrize("which", ["image", "speech"])
def test_one_changed_byte_makes_verify_say_tampered(app, which, request, tmp_path):
    rec, raw, path = request.getfixturevalue(which)
    bad = bytearray(raw)
    bad[len(bad) // 2] ^= 0x5A
    changed = tmp_path / f"changed{path.suffix}"
    changed.write_bytes(bytes(bad))
    run = verify(app, changed)
    assert run.returncode == 1, run.stdout
    assert "credentials: tampered" in run.stdout and "dataHash.mismatch" in run.stdout


def test_a_png_stripped_of_its_metadata_is_unsigned_and_found_by_its_pixels(app, image, tmp_path):
    from PIL import Image

    rec, raw, _ = image
    stripped = tmp_path / "stripped.png"
    with Image.open(io.BytesIO(raw)) as im:
        Image.frombytes("RGB", im.size, im.convert("RGB").tobytes()).save(stripped)  # pixels only, no chunks
    run = verify(app, stripped)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "credentials: unsigned" in run.stdout and "record found by content" in run.stdout
    assert rec["id"] in run.stdout


@needs_piper
def test_a_rewritten_wav_is_unsigned_and_found_by_its_samples(app, speech, tmp_path):
    rec, raw, _ = speech
    with wave.open(io.BytesIO(raw)) as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    rewritten = tmp_path / "rewritten.wav"
    with wave.open(str(rewritten), "wb") as w:
        w.setparams(params)
        w.writeframes(frames)
    assert rewritten.read_bytes() != raw
    run = verify(app, rewritten)
    assert run.returncode == 0 and "credentials: unsigned" in run.stdout and rec["id"] in run.stdout


def test_a_file_signed_by_another_instance_is_foreign(app, image, tmp_path):
    from PIL import Image

    from genforge.engines.base import ResolvedModel

    rec, raw, _ = image
    other = Credentials(tmp_path / "other-instance")  # another genforge: its own CA and key
    model = ResolvedModel("portrait", "image", "portrait", "-", rec["model"]["file_sha256"], 0, False)
    buf = io.BytesIO()
    Image.open(io.BytesIO(raw)).convert("RGB").save(buf, format="PNG")  # the same face, without our manifest
    signed = other.sign(
        content_id=rec["id"], content_type="image", media_type="image/png", data=buf.getvalue(), model=model,
        params=rec["params"],
    )  # fmt: skip
    path = tmp_path / "foreign.png"
    path.write_bytes(signed.data)
    run = verify(app, path)
    assert run.returncode == 1 and "credentials: foreign" in run.stdout, run.stdout


def test_text_credentials_are_a_signed_sidecar_that_verifies(app, text, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    rec, raw, path = text
    client, data = app
    resp = client.get(f"/api/v1/content/{rec['id']}/credentials")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["verdict"] == "valid" and doc["content_id"] == rec["id"]
    manifest = doc["manifest"]
    assert manifest["asset"]["sha256"] == sha256(raw) and TRAINED_ALGORITHMIC_MEDIA in json.dumps(manifest)
    leaf = x509.load_pem_x509_certificate(doc["signature"]["certificate_chain"][0].encode())
    signature = base64.b64decode(doc["signature"]["value"])
    leaf.public_key().verify(signature, canonical(manifest), ec.ECDSA(hashes.SHA256()))  # raises when it is wrong
    assert "credentials_sidecar" not in rec  # served by the endpoint, not in the record
    run = verify(app, path)
    assert run.returncode == 0 and "credentials: valid" in run.stdout
    edited = tmp_path / "edited.txt"
    edited.write_bytes(raw + b"!")
    assert verify(app, edited).returncode == 1


def test_image_credentials_are_served_as_read_back_from_the_file(app, image):
    rec = image[0]
    doc = app[0].get(f"/api/v1/content/{rec['id']}/credentials").json()
    assert doc["verdict"] == "valid" and doc["manifest_label"] == rec["credentials"]["manifest_label"]
    assert rec["id"] in json.dumps(doc["manifest"])


def test_a_broken_signing_key_fails_the_generation_and_stores_nothing(app_with, tmp_path):
    data = tmp_path / "broken"
    Credentials(data).ensure()
    keystore = data / "credentials" / "keystore.json"
    keys = json.loads(keystore.read_text())
    keystore.write_text(json.dumps({**keys, "signer_key": "-----BEGIN PRIVATE KEY-----\nbroken\n"}))
    client = app_with(data_dir=data, preload=False)
    resp = client.post(GENERATE, json=text_body("Name a bird.", max_tokens=8))
    assert resp.status_code == 500, resp.text
    err = resp.json()["error"]
    assert err["code"] == "credentials_failed" and "GENFORGE_CREDENTIALS=off" in err["hint"]
    rec = client.get(f"/api/v1/content/{err['content_id']}").json()
    assert rec["status"] == "failed" and rec["artifact"] is None
    assert files_under(data / "artifacts") == []


def test_credentials_off_is_recorded(app_with, tmp_path):
    client = app_with(data_dir=tmp_path / "off", preload=False, credentials="off")
    resp = client.post(GENERATE, json=text_body("Name a bird.", max_tokens=8))
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert rec["credentials"] == {"signed": False, "reason": "GENFORGE_CREDENTIALS=off"}
    assert client.get(f"/api/v1/content/{rec['id']}/credentials").status_code == 404
    assert not (tmp_path / "off" / "credentials").exists()
