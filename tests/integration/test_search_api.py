"""Full-text search over HTTP (`q=`) and the other history filters, on real records from the real model, on
SQLite (FTS5) and on PostgreSQL (a generated tsvector column): the index kept in step by the database, the
migrations' backfill, the same query language on both; verify; the UI under a root path."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from conftest import (
    CONTENT,
    DATABASES,
    GENERATE,
    assert_bad_input,
    make_settings,
    run_cli,
    running_app,
    runtime_of,
    text_body,
)
from genforge.api import create_app
from genforge.stores.db import Database
from genforge.stores.search import Term, parse_query, search_for
from scale_fixtures import postgres  # noqa: F401 (a fixture)

pytestmark = pytest.mark.both_modes


@pytest.fixture(scope="module", params=DATABASES)
def app(request, tmp_path_factory):
    """An app of its own, so that search sees exactly the records made here: on SQLite, then on PostgreSQL."""
    url = request.getfixturevalue("postgres").new_database() if request.param == "postgresql" else ""
    settings = make_settings(tmp_path_factory.mktemp("search"), database_url=url)
    with running_app(settings) as client:
        yield client


@pytest.fixture(scope="module")
def made(app) -> list[dict]:
    """Two real text records and one failed image record (no image model)."""
    recs = []
    for body in [
        text_body("Describe an orchard in one sentence.", max_tokens=24, seed=5, temperature=0),
        text_body("Describe a harbour in one sentence.", max_tokens=24, seed=6, temperature=0),
    ]:
        resp = app.post(GENERATE, json=body)
        assert resp.status_code == 201, resp.text
        recs.append(resp.json())
    resp = app.post(GENERATE, json={"content_type": "image", "prompt": "an orchard at noon"})
    assert resp.status_code == 503, resp.text
    recs.append(app.get(f"{CONTENT}/{resp.json()['error']['content_id']}").json())
    return recs


def found(client, **params) -> list[str]:
    resp = client.get(CONTENT, params=params)
    assert resp.status_code == 200, resp.text
    return [r["id"] for r in resp.json()["items"]]


def only_in_text(rec: dict, others: list[dict]) -> str:
    """A word of the record's generated text that is in no prompt and no other record's text."""
    elsewhere = " ".join([rec["prompt"]] + [o["prompt"] + " " + (o.get("text") or "") for o in others]).lower()
    words = [w for w in re.findall(r"[A-Za-z]{4,}", rec["text"]) if w.lower() not in elsewhere]
    assert words, f"no distinctive word in {rec['text']!r}"
    return max(words, key=len)


def test_a_word_only_in_the_generated_text_finds_its_record(app, made):
    orchard, harbour, _ = made
    word = only_in_text(orchard, [harbour, made[2]])
    assert found(app, q=word) == [orchard["id"]]
    assert found(app, q=word.upper()) == [orchard["id"]], "search is case-insensitive"
    assert found(app, q=word[:4] + "*") and orchard["id"] in found(app, q=word[:4] + "*")


def test_prompt_words_phrases_and_filters_combine(app, made):
    orchard, harbour, image = made
    assert found(app, q="orchard") == [image["id"], orchard["id"]], "prompt words, newest first"
    assert found(app, q="orchard", content_type="text") == [orchard["id"]]
    assert found(app, q="orchard", status="failed") == [image["id"]]
    assert found(app, q='"an orchard at noon"') == [image["id"]]
    assert found(app, q="orchard harbour") == [], "every word must occur"
    assert found(app, q="orchard", limit=1, offset=1) == [orchard["id"]]
    assert app.get(CONTENT, params={"q": "orchard", "limit": 1}).json()["total"] == 2
    assert found(app, q="orchard", model="smollm2-135m-instruct") == [orchard["id"]]
    # a record's created_at bounds it: after the first record's moment excludes the older ones
    moment = datetime.fromisoformat(harbour["created_at"])
    assert found(app, q="describe", created_after=moment.isoformat()) == [harbour["id"]]
    assert found(app, q="describe", created_before=moment.isoformat()) == [orchard["id"]]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert found(app, created_after=future) == []
    assert found(app, q="", content_type="text") == [harbour["id"], orchard["id"]], "a blank q lists"


def test_the_cli_searches_the_same_records(app, made):
    settings = runtime_of(app).settings
    env = {"GENFORGE_DATABASE_URL": settings.database_url} if settings.database_url else {}
    word = only_in_text(made[0], made[1:])
    result = run_cli(settings.data_dir, "content", "search", word, env=env)
    assert result.returncode == 0, result.stderr
    assert made[0]["id"] in result.stdout and made[1]["id"] not in result.stdout
    assert "1 records match" in result.stdout
    bad = run_cli(settings.data_dir, "content", "search", '"open', env=env)
    assert bad.returncode == 2 and "unbalanced" in bad.stderr


@pytest.mark.parametrize("q", ['"unbalanced AND (*', "(*", "x" * 501])
def test_a_query_that_cannot_be_searched_is_a_422_naming_q(app, made, q):
    err = assert_bad_input(app.get(CONTENT, params={"q": q}), "q")
    assert err["field"] == "q"


def test_fts_operators_typed_by_a_user_are_plain_words(app, made):
    # AND / NEAR / parentheses / column filters are FTS5 syntax, & | ! <-> :* ' \\ tsquery syntax; here they are
    # words (and never a 500)
    for q in ["AND", "orchard OR", "NEAR(orchard", "prompt:orchard", "orchard)", "-orchard", "^orchard", "orch*ard"]:
        resp = app.get(CONTENT, params={"q": q})
        assert resp.status_code == 200, (q, resp.text)
    for q in ["orchard & !orchard", "orchard <-> harbour", "orchard:*", "a:A", "it's", "back\\slash"]:
        resp = app.get(CONTENT, params={"q": q})
        assert resp.status_code == 200, (q, resp.text)
    assert found(app, q="orchard|harbour") == [], "| is no operator: `orchard|harbour` is in no record"
    assert found(app, q="!harbour orchard") == found(app, q="harbour orchard") == []
    assert parse_query('say "hi there" now*') == [Term("say"), Term("hi there", phrase=True), Term("now", prefix=True)]


def test_the_index_follows_deletes(app, made, tmp_path):
    rec = app.post(GENERATE, json=text_body("Describe a windmill in one sentence.", max_tokens=8)).json()
    assert found(app, q="windmill") == [rec["id"]]
    assert app.delete(f"{CONTENT}/{rec['id']}").status_code == 204
    assert found(app, q="windmill") == []
    if not runtime_of(app).settings.database_url:  # PostgreSQL's tsvector is a column of the row itself
        db = runtime_of(app).settings.data_dir / "genforge.db"
        with sqlite3.connect(db) as conn:  # FTS5's own consistency check of the external-content index
            conn.execute("INSERT INTO content_fts(content_fts, rank) VALUES ('integrity-check', 1)")


@pytest.mark.only_in("embedded", reason="no app: migrations on both databases, the same in either mode")
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_migrations_backfill_records_written_before_them(tmp_path, request, backend):
    """A history made at revision 0001 upgrades to the head with its records searchable, and the query
    language means the same on both databases: accents folded, phrases within the prompt or the text."""
    url = (
        request.getfixturevalue("postgres").new_database() if backend == "postgresql" else f"sqlite:///{tmp_path}/a.db"
    )
    db = Database(url)
    cfg = db.alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql(
            "INSERT INTO content (id, content_type, status, prompt, quality, params, extra, text, created_at) "
            "VALUES ('old-1', 'text', 'succeeded', 'Describe the airship', 'standard', '{}', '{}', "
            "'A zeppelin drifted over the café.', '2026-01-01')"
        )
    db.migrate()
    search = search_for(url)
    with db.session() as s:
        for q, hits in [
            ("zeppelin", 1),
            ("ZEPPELIN cafe", 1),
            ("zepp*", 1),
            ('"zeppelin drifted"', 1),
            ('"drifted zeppelin"', 0),
            ('"airship a zeppelin"', 0),  # the prompt's last words and the text's first are no phrase
            ("zeppelin harbour", 0),
        ]:
            total, rows = search.page(s, q, [], 10, 0)
            assert (total, [r.id for r in rows]) == (hits, ["old-1"] * hits), (backend, q)
        if backend == "postgresql":  # the GIN index serves the search
            s.execute(sa.text("SET LOCAL enable_seqscan = off"))
            plan = s.execute(
                sa.text("EXPLAIN SELECT id FROM content WHERE search_tsv @@ to_tsquery('genforge_search', 'x')")
            )
            assert "ix_content_search" in " ".join(r[0] for r in plan)
    db.dispose()


def test_verify_rehashes_the_artifact(app, made):
    orchard = made[0]
    resp = app.post(f"{CONTENT}/{orchard['id']}/verify")
    assert resp.status_code == 200, resp.text
    assert resp.json()["intact"] is True and resp.json()["sha256"] == orchard["artifact"]["sha256"]
    assert app.post(f"{CONTENT}/{made[2]['id']}/verify").status_code == 409, "a failed record has no file"
    path = runtime_of(app).store.resolve(_relpath(app, orchard["id"]))
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"!")
        bad = app.post(f"{CONTENT}/{orchard['id']}/verify").json()
        assert bad["intact"] is False and bad["sha256"] != orchard["artifact"]["sha256"]
    finally:
        path.write_bytes(original)


def _relpath(client, content_id: str) -> str:
    from genforge.stores.db import ContentRow

    with runtime_of(client).db.session() as s:
        return s.get(ContentRow, content_id).artifact_path


@pytest.mark.only_in("embedded", reason="its own app without jobs: the UI's files and headers, the same in either mode")
def test_the_ui_is_served_with_a_csp_and_relative_urls_under_a_root_path(tmp_path):
    app = create_app(make_settings(tmp_path, preload=False))
    with TestClient(app, root_path="/gf", base_url="http://localhost") as client:  # a loopback Host name
        page = client.get("/gf/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert not re.search(r'(src|href)="/', page.text), "absolute URLs break under a proxy's path prefix"
        assert "<script>" not in page.text, "no inline script"
        js = client.get("/gf/app.js").text
        assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "outerHTML" not in js
        assert not re.search(r"""(fetch|api|json)\(\s*[`'"]/""", js), "the UI's API calls are relative"
        assert client.get("/gf/api/v1/content").status_code == 200
