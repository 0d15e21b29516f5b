"""Hostile input: odd ids on every {id} route, deep or huge JSON, NUL bytes, astronomical integers, wrong
content types. Each is a 4xx in the one error shape and leaves nothing behind (no record, no file)."""

from __future__ import annotations

import pytest

from conftest import CONTENT, GENERATE, files_under, text_body

pytestmark = pytest.mark.both_modes

ODD_IDS = ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "x" * 300, "%00", "' OR 1=1 --", "%F0%9F%92%A9", "-1"]
ID_ROUTES = [
    ("GET", ""),
    ("GET", "/file"),
    ("GET", "/events"),
    ("POST", "/cancel"),
    ("POST", "/verify"),
    ("DELETE", ""),
]


@pytest.fixture
def nothing_left(live):
    """Records and artifact files are the same before and after the test."""
    before = (live.client.get(CONTENT, params={"limit": 1}).json()["total"], files_under(live.settings.artifacts_dir))
    yield
    after = (live.client.get(CONTENT, params={"limit": 1}).json()["total"], files_under(live.settings.artifacts_dir))
    assert after == before


@pytest.mark.parametrize("content_id", ODD_IDS)
@pytest.mark.parametrize(("method", "suffix"), ID_ROUTES)
def test_odd_ids_are_404_on_every_id_route(live, nothing_left, content_id, method, suffix):
    resp = live.client.request(method, f"{CONTENT}/{content_id}{suffix}")
    assert resp.status_code in (404, 405, 422), (resp.status_code, resp.text)  # 405: a path no route has
    assert set(resp.json()) == {"error"}


@pytest.mark.parametrize("depth", [200, 5000])
def test_deeply_nested_json_is_refused(live, nothing_left, depth):
    body = b'{"content_type": "text", "prompt": "x", "params": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
    resp = live.client.post(GENERATE, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert set(resp.json()) == {"error"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"max_tokens": 2**80}, "params.max_tokens"),
        ({"max_tokens": -(2**80)}, "params.max_tokens"),
        ({"seed": 2**200}, "params.seed"),
        ({"temperature": 1e308}, "params.temperature"),
    ],
)
def test_astronomical_integers_are_422_naming_the_field(live, nothing_left, params, field):
    resp = live.client.post(GENERATE, json={"content_type": "text", "prompt": "x", "params": params})
    assert resp.status_code == 422 and field in resp.json()["error"]["message"], resp.text


@pytest.mark.parametrize("query", ["limit=99999999999999999999", "offset=-1", "limit=0", "offset=1e400"])
def test_astronomical_query_integers_are_422(live, query):
    resp = live.client.get(f"{CONTENT}?{query}")
    assert resp.status_code == 422, resp.text


def test_a_nul_byte_in_the_prompt_is_stored_as_text_or_refused_never_a_crash(live):
    resp = live.client.post(GENERATE, json=text_body("Name a\x00 colour.", max_tokens=4))
    assert resp.status_code in (201, 422), resp.text
    if resp.status_code == 201:
        assert live.client.get(f"{CONTENT}/{resp.json()['id']}").json()["prompt"] == "Name a\x00 colour."


def test_a_ten_megabyte_prompt_is_413(live, nothing_left):
    resp = live.client.post(GENERATE, json=text_body("x" * 10_000_000))
    assert resp.status_code == 413, resp.text[:200]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_body_that_is_not_json_is_refused(live, nothing_left, ctype):
    resp = live.client.post(
        GENERATE, content=b'{"content_type": "text", "prompt": "x"}', headers={"Content-Type": ctype}
    )
    assert 400 <= resp.status_code < 500, resp.text
    assert set(resp.json()) == {"error"}
