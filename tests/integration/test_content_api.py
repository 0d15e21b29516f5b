"""Reading and deleting content over HTTP: listing (newest first, filters, paging), files, DELETE, 404s."""

from __future__ import annotations

import pytest

from conftest import (
    CONTENT,
    DATABASES,
    GENERATE,
    assert_error,
    assert_failed,
    fake_gguf,
    files_under,
    make_settings,
    running_app,
    runtime_of,
    text_body,
)
from scale_fixtures import postgres  # noqa: F401 (a fixture)

pytestmark = pytest.mark.both_modes
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module", params=DATABASES)
def app(request, tmp_path_factory):
    """An app of its own, so that listing sees exactly the records made here: on SQLite, then on PostgreSQL."""
    url = request.getfixturevalue("postgres").new_database() if request.param == "postgresql" else ""
    settings = make_settings(tmp_path_factory.mktemp("content-api"), database_url=url)
    with running_app(settings) as client:
        yield client, runtime_of(client).settings


@pytest.fixture(scope="module")
def made(app, tmp_path_factory) -> list[dict]:
    """Five records, oldest first: three real text generations, a failed image (no image model is
    installed) and a failed text (its model file was deleted)."""
    client, settings = app
    gone = fake_gguf(tmp_path_factory.mktemp("models") / "gone.gguf")
    runtime_of(client).catalog.add(gone, name="gone")
    gone.unlink()
    records = []
    for body in [
        text_body("Name a bird.", max_tokens=8, seed=1),
        {"content_type": "image", "prompt": "a cat"},
        text_body("Name a tree.", max_tokens=8, seed=2),
        {**text_body("Name a lake."), "model": "gone"},
        text_body("Name a river.", max_tokens=8, seed=3),
    ]:
        resp = client.post(GENERATE, json=body)
        if resp.status_code == 201:
            records.append(resp.json())
        else:
            assert_error(resp, 503, "model_unavailable")
            records.append(client.get(f"{CONTENT}/{resp.json()['error']['content_id']}").json())
    assert [r["status"] for r in records] == ["succeeded", "failed", "succeeded", "failed", "succeeded"]
    return records


def ids(page: dict) -> list[str]:
    return [r["id"] for r in page["items"]]


def listing(client, **query) -> dict:
    resp = client.get(CONTENT, params=query)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_list_is_newest_first_with_a_total(app, made):
    client, _ = app
    page = listing(client)
    assert page["total"] == 5
    assert ids(page) == [r["id"] for r in reversed(made)]
    assert page["items"] == list(reversed(made))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"content_type": "text"}, [0, 2, 3, 4]),
        ({"content_type": "image"}, [1]),
        ({"content_type": "speech"}, []),
        ({"status": "succeeded"}, [0, 2, 4]),
        ({"status": "failed"}, [1, 3]),
        ({"status": "failed", "content_type": "text"}, [3]),
        ({"status": "running"}, []),
    ],
)
def test_list_filters(app, made, query, expected):
    client, _ = app
    page = listing(client, **query)
    assert page["total"] == len(expected)
    assert ids(page) == [made[i]["id"] for i in reversed(expected)]


def test_list_pages_with_limit_and_offset(app, made):
    client, _ = app
    newest_first = [r["id"] for r in reversed(made)]
    pages = [listing(client, limit=2, offset=offset) for offset in (0, 2, 4)]
    assert [p["total"] for p in pages] == [5, 5, 5]
    assert [(p["limit"], p["offset"]) for p in pages] == [(2, 0), (2, 2), (2, 4)]
    assert [ids(p) for p in pages] == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    assert listing(client, offset=10)["items"] == []


@pytest.mark.parametrize(
    "query",
    [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"status": "done"}, {"content_type": "hologram"}, {"limit": "many"}],
)
def test_list_rejects_bad_queries(app, query):
    client, _ = app
    err = assert_error(client.get(CONTENT, params=query), 422, "invalid_request")
    assert next(iter(query)) in err["message"]


def test_failed_requests_are_recorded_as_failed(app, made):
    client, _ = app
    for rec in (made[1], made[3]):
        assert_failed(rec, "model_unavailable")
        assert_error(client.get(f"{CONTENT}/{rec['id']}/file"), 404, "not_found")


@pytest.mark.parametrize(("method", "path"), [("GET", "/{id}"), ("DELETE", "/{id}"), ("GET", "/{id}/file")])
def test_unknown_id_is_404(app, method, path):
    client, _ = app
    err = assert_error(client.request(method, CONTENT + path.format(id=UNKNOWN_ID)), 404, "not_found")
    assert UNKNOWN_ID in err["message"]


def test_unknown_path_is_a_typed_404(app):
    client, _ = app
    assert_error(client.get("/api/v1/nothing-here"), 404, "not_found")


def test_delete_removes_the_record_and_its_file(app, made):
    client, settings = app
    victim = made[0]
    path = next(p for p in files_under(settings.artifacts_dir) if p.stem == victim["artifact"]["sha256"])

    resp = client.delete(f"{CONTENT}/{victim['id']}")
    assert resp.status_code == 204 and resp.content == b""
    assert not path.exists()
    assert_error(client.get(f"{CONTENT}/{victim['id']}"), 404, "not_found")
    assert_error(client.get(f"{CONTENT}/{victim['id']}/file"), 404, "not_found")
    assert_error(client.delete(f"{CONTENT}/{victim['id']}"), 404, "not_found")
    assert victim["id"] not in ids(listing(client))
    # the other records and their files are untouched
    for other in (made[2], made[4]):
        assert client.get(other["artifact"]["url"]).content == other["text"].encode()


def test_delete_keeps_a_file_another_record_shares(app):
    """Artifacts are content-addressed: two identical texts share one file until both are gone."""
    client, settings = app
    body = text_body("Name a mountain.", max_tokens=8, seed=11, temperature=0)
    first, second = (client.post(GENERATE, json=body).json() for _ in range(2))
    assert first["artifact"]["sha256"] == second["artifact"]["sha256"]

    assert client.delete(f"{CONTENT}/{first['id']}").status_code == 204
    assert client.get(second["artifact"]["url"]).content == second["text"].encode()
    assert client.delete(f"{CONTENT}/{second['id']}").status_code == 204
    assert not [p for p in files_under(settings.artifacts_dir) if p.stem == second["artifact"]["sha256"]]
