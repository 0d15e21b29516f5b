"""The publishing parts that need no network: record keys, fitting an image to a blob limit, secrets at rest,
and webhook addresses."""

from __future__ import annotations

import io
import re
import stat

import numpy as np
import pytest
from PIL import Image

from genforge.errors import CredentialsFailed, InvalidRequest
from genforge.platform.publishing import fit_image, make_tid, pixel_difference
from genforge.platform.webhooks import check_address
from genforge.stores.secrets import SecretBox

TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")  # the AT Protocol's TID syntax


def test_record_keys_are_tids_that_sort_by_time():
    a, b = make_tid(1_700_000_000_000_000, 5), make_tid(1_700_000_000_000_001, 5)
    assert TID.match(a) and TID.match(b)
    assert a < b
    assert make_tid(1_700_000_000_000_000, 5) == a  # the same publication, the same key


def noisy_png(size: int) -> bytes:
    rng = np.random.default_rng(1)
    base = np.linspace(0, 255, size, dtype=np.float32)[None, :, None].repeat(size, 0).repeat(3, 2)
    pixels = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def test_an_image_over_the_limit_is_re_encoded_to_fit_with_its_pixels_kept():
    png = noisy_png(1024)
    assert len(png) > 1_000_000
    data, media, diff, w, h = fit_image(png, 1_000_000)
    assert media == "image/jpeg" and len(data) <= 1_000_000 and (w, h) == (1024, 1024)
    assert diff == pytest.approx(pixel_difference(png, data), abs=1e-3) and diff < 3
    small = noisy_png(64)
    assert fit_image(small, 1_000_000)[:3] == (small, "image/png", 0.0)  # fits: the PNG itself


def test_secrets_are_sealed_with_a_private_key_in_the_data_dir(tmp_path):
    box = SecretBox(tmp_path)
    token = box.seal("hunter2-app-password")
    assert b"hunter2" not in token
    assert SecretBox(tmp_path).open(token) == "hunter2-app-password"  # the key is kept
    assert stat.S_IMODE((tmp_path / "secrets.key").stat().st_mode) == 0o600
    with pytest.raises(CredentialsFailed):
        SecretBox(tmp_path / "other").open(token)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://metadata.google.internal/computeMetadata",
        "http://[fe80::1]/x",
        "ftp://127.0.0.1/x",
        "http://127.0.0.1:99999/x",
        "http:///nohost",
    ],
)
def test_webhook_addresses_never_called(url):
    with pytest.raises(InvalidRequest):
        check_address(url, allow_private=True)


def test_private_addresses_are_allowed_unless_the_operator_narrows_it():
    check_address("http://127.0.0.1:8080/hook", allow_private=True)
    check_address("http://10.1.2.3/hook", allow_private=True)
    for url in ("http://127.0.0.1:8080/hook", "http://192.168.1.5/hook"):
        with pytest.raises(InvalidRequest):
            check_address(url, allow_private=False)
