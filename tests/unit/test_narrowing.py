"""Values the types say may be missing or of another kind: each is a typed answer, never a crash (issue 26, item 5).

Before mypy checked these modules, each case below ended in an AttributeError or TypeError (a 500, or a doctor
that stopped); now the validators answer invalid_output, a foreign sidecar is a verdict, and a record of the
wrong type is a typed internal error."""

from __future__ import annotations

import base64
import datetime
import io
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import validate_output
from genforge.cli.doctor import _smoke_text
from genforge.contenttypes.image import ImageRecord
from genforge.contenttypes.records import present, record_as
from genforge.contenttypes.text import TextRecord
from genforge.engines.base import EngineOutput, ImageFacts, SpeechFacts, TextFacts
from genforge.errors import GenforgeError, InvalidOutput
from genforge.media.audio import encode_wav
from genforge.media.images import PREFIX, encode_png
from genforge.stores.credentials import Credentials

RATE = 22050
SENTENCE = "Genforge checks that speech works. This is the second sentence."


def text_record(**over: Any) -> TextRecord:
    rec: dict[str, Any] = {
        "id": "c-1",
        "content_type": "text",
        "status": "succeeded",
        "prompt": "Say hello.",
        "quality": "standard",
        "params": {"max_tokens": 16, "temperature": 0.6, "top_p": 0.9, "seed": 1, "stop": []},
        "model": {"name": "m", "file_sha256": None, "engine": "remote", "engine_version": "remote 1"},
        "artifact": None,
        "timings": {"load_ms": 0.0, "generate_ms": 500.0, "total_ms": 510.0},
        "created_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:01+00:00",
        "error": None,
        "text": "Hello.",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    rec.update(over)
    return TextRecord.model_validate(rec)


def test_a_jpeg_sent_as_a_png_is_invalid_output():
    """Only a PNG has `text` chunks: another format reaches the format check instead of an AttributeError."""
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="JPEG")
    out = EngineOutput(buf.getvalue(), "image/png", "x", 0, 1, facts=ImageFacts())
    with pytest.raises(InvalidOutput, match="JPEG, not PNG"):
        validate_output("image", out, {"width": 32, "height": 32, "seed": 5}, "a cat")


def speech(facts: Any) -> EngineOutput:
    pcm = (8000 * np.sin(np.arange(4 * RATE) * 2 * np.pi * 220 / RATE)).astype("<i2").tobytes()
    return EngineOutput(encode_wav(pcm, RATE), "audio/wav", "t", 0, 1, text=SENTENCE, facts=facts)


def test_speech_facts_without_a_duration_are_invalid_output():
    with pytest.raises(InvalidOutput, match="sample rate or duration"):
        validate_output("speech", speech(SpeechFacts(sample_rate=RATE)), {"speed": 1.0}, SENTENCE)


def test_speech_facts_of_another_content_type_are_invalid_output():
    with pytest.raises(InvalidOutput, match="reported TextFacts"):
        validate_output("speech", speech(TextFacts()), {"speed": 1.0}, SENTENCE)


def test_image_facts_of_another_content_type_are_invalid_output():
    """A real PNG with its provenance, reported with text facts (which have no content_hash to set)."""
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    png = encode_png(noise, {PREFIX + "content_id": "c-1", PREFIX + "seed": "5"})
    out = EngineOutput(png, "image/png", "x", 0, 1, facts=TextFacts())
    with pytest.raises(InvalidOutput, match="reported TextFacts"):
        validate_output("image", out, {"width": 32, "height": 32, "seed": 5}, "a cat")


def test_a_sidecar_whose_signer_has_no_ec_key_is_tampered(tmp_path):
    """The sidecar says ES256; an RSA certificate in its chain cannot have made it (was a TypeError)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not genforge")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    sidecar = {
        "manifest": {"asset": {"sha256": "0" * 64}},
        "signature": {
            "value": base64.b64encode(b"not a signature").decode(),
            "certificate_chain": [cert.public_bytes(serialization.Encoding.PEM).decode()],
        },
    }
    verdict = Credentials(tmp_path).check_sidecar(sidecar, b"some text")
    assert verdict.word == "tampered" and "RSAPublicKey" in verdict.detail


def test_a_record_of_another_type_is_a_typed_internal_error():
    rec = text_record()
    assert record_as(rec, TextRecord) is rec
    with pytest.raises(GenforgeError, match="text record, not the ImageRecord asked for") as info:
        record_as(rec, ImageRecord)
    assert info.value.code == "internal_error"


def test_a_missing_field_of_a_succeeded_record_is_a_typed_internal_error():
    rec = text_record(timings={"load_ms": None, "generate_ms": 500.0, "total_ms": 510.0})
    assert present(rec.timings.generate_ms, "generate time", rec) == 500.0
    with pytest.raises(GenforgeError, match="succeeded record c-1 has no load time") as info:
        present(rec.timings.load_ms, "load time", rec)
    assert info.value.code == "internal_error"


def test_doctor_smoke_text_with_a_model_that_counts_no_tokens():
    """A remote model may report no token counts (usage null): the check says so instead of dividing None."""
    deleted: list[str] = []
    rec = text_record(usage={"prompt_tokens": None, "completion_tokens": None})
    service = SimpleNamespace(generate=lambda req, caller: rec, delete=lambda cid, caller: deleted.append(cid))
    rt = SimpleNamespace(settings=SimpleNamespace(default_text_model="m"), service=service)
    check = _smoke_text(rt)  # a stand-in with the parts the check uses
    assert check.ok and "the model reported no token counts" in check.detail and "0.50 s" in check.detail
    assert deleted == ["c-1"]
