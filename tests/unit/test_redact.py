"""Credentials out of URLs: the one helper every message, log line and answer that names a URL goes through."""

from __future__ import annotations

import pytest

from genforge.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:S3cretPw0rd@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:S3cretPw0rd@cache.internal:6380/1", "rediss://default:***@cache.internal:6380/1"),
        (
            "postgresql+psycopg://genforge:DbPassw0rd@db.internal:5432/genforge",
            "postgresql+psycopg://genforge:***@db.internal:5432/genforge",
        ),
        ("https://user:pw@gpu-box:8080/v1", "https://user:***@gpu-box:8080/v1"),
        ("https://gpu-box/v1?api-key=abc123&deployment=x", "https://gpu-box/v1?api-key=***&deployment=x"),
        # nothing secret: unchanged, byte for byte
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (
            "postgresql+psycopg://postgres@127.0.0.1:5432/genforge",
            "postgresql+psycopg://postgres@127.0.0.1:5432/genforge",
        ),
        ("http://[::1]:8080/v1", "http://[::1]:8080/v1"),
        ("sqlite:////var/lib/genforge/genforge.db", "sqlite:////var/lib/genforge/genforge.db"),
    ],
)
def test_redact_url_masks_the_password_and_secret_parameters_only(url, shown):
    assert redact_url(url) == shown


def test_a_url_that_does_not_parse_keeps_nothing_after_its_scheme():
    assert redact_url("redis://:S3cretPw0rd@[not-an-address") == "redis://***"


def test_redact_text_masks_every_url_inside_a_message():
    message = (
        "broker redis://:S3cretPw0rd@127.0.0.1:6379/0 unreachable: Error connecting "
        "(postgresql://u:DbPassw0rd@db/x) and 'https://k:Tok3n@remote/v1'"
    )
    shown = redact_text(message)
    for secret in ("S3cretPw0rd", "DbPassw0rd", "Tok3n"):
        assert secret not in shown, shown
    assert "redis://:***@127.0.0.1:6379/0 unreachable" in shown
    assert redact_text("no URL here: Connection refused") == "no URL here: Connection refused"
