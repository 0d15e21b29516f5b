"""Key tokens, rate parsing, the token bucket and Host parsing: the small parts of access control."""

from __future__ import annotations

import pytest

from genforge.api.network import host_name
from genforge.api.server import is_loopback
from genforge.core.access import RateLimiter, format_rate, parse_rate
from genforge.errors import InvalidRequest


@pytest.mark.parametrize(
    ("text", "want"),
    [("60/min", (60, 60.0)), ("5/s", (5, 1.0)), ("1000/hour", (1000, 3600.0)), ("10/5min", (10, 300.0))],
)
def test_parse_rate(text, want):
    assert parse_rate(text) == want


@pytest.mark.parametrize("text", ["fast", "0/min", "5/fortnight", "-1/s", "/min"])
def test_parse_rate_refuses_nonsense(text):
    with pytest.raises(InvalidRequest):
        parse_rate(text)


def test_format_rate_round_trips():
    assert format_rate(*parse_rate("60/min")) == "60/min"
    assert format_rate(None, None) == "-"


def test_token_bucket_allows_a_burst_then_refills(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("genforge.core.access.time.monotonic", lambda: clock[0])
    bucket = RateLimiter()
    assert [bucket.take("k", 3, 60) for _ in range(3)] == [None, None, None]
    wait = bucket.take("k", 3, 60)
    assert wait == pytest.approx(20.0)  # one token every 20 s
    clock[0] += 20
    assert bucket.take("k", 3, 60) is None
    assert bucket.take("other", 3, 60) is None  # one bucket per key


@pytest.mark.parametrize(
    ("host", "name"), [("Example.org:8000", "example.org"), ("[::1]:8000", "::1"), ("::1", "::1"), ("a", "a")]
)
def test_host_name(host, name):
    assert host_name(host) == name


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("myhost")
