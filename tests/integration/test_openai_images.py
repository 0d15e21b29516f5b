"""POST /v1/images/generations: the record's artifact as a URL, or the file itself as base64 (the path that reads
a generated record as an ImageRecord and its artifact, typed in issue 26 item 5)."""

from __future__ import annotations

import base64

import pytest

from conftest import make_settings, running_app, sha256

HEADER = "X-Genforge-Content-Id"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with running_app(make_settings(tmp_path_factory.mktemp("openai-images"), preload=False)) as c:
        yield c


def test_an_image_comes_back_as_the_url_of_its_record(client):
    resp = client.post("/v1/images/generations", json={"prompt": "a face", "model": "portrait", "size": "256x256"})
    assert resp.status_code == 200, resp.text
    item = resp.json()["data"][0]
    record = client.get(f"/api/v1/content/{resp.headers[HEADER]}").json()
    assert item["url"] == record["artifact"]["url"]
    assert sha256(client.get(item["url"]).content) == record["artifact"]["sha256"]


def test_an_image_comes_back_as_base64_of_its_file(client):
    body = {"prompt": "a face", "model": "portrait", "size": "256x256", "seed": 3, "response_format": "b64_json"}
    resp = client.post("/v1/images/generations", json=body)
    assert resp.status_code == 200, resp.text
    data = base64.b64decode(resp.json()["data"][0]["b64_json"])
    record = client.get(f"/api/v1/content/{resp.headers[HEADER]}").json()
    assert data.startswith(b"\x89PNG") and sha256(data) == record["artifact"]["sha256"]
