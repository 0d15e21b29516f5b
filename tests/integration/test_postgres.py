"""PostgreSQL (GENFORGE_DATABASE_URL=postgresql+psycopg://...): the same migrations, records and recovery as
SQLite, on a throw-away cluster started here (tests/integration/test_content_api.py runs its API tests on both)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command

from conftest import (
    CONTENT,
    GENERATE,
    TEXT_SETTINGS,
    assert_error,
    assert_failed,
    assert_succeeded_text,
    failed_record,
    free_port,
    make_settings,
    running_app,
    sha256,
    text_body,
)
from genforge.errors import DatabaseUnavailable
from genforge.stores.db import ContentRow, Database
from scale_fixtures import pg_url, postgres  # noqa: F401 (fixtures)


def test_generate_get_stream_delete_on_postgres(tmp_path, postgres, pg_url):  # noqa: F811
    settings = make_settings(tmp_path / "data", database_url=pg_url)
    with running_app(settings) as client:
        assert client.get("/readyz").json()["checks"]["database"]["ok"]
        rec = client.post(GENERATE, json=text_body("Name a bird.", max_tokens=8)).json()
        assert_succeeded_text(rec)
        assert client.get(f"{CONTENT}/{rec['id']}").json() == rec
        assert sha256(client.get(rec["artifact"]["url"]).content) == rec["artifact"]["sha256"]
        with client.stream("POST", GENERATE, json={**text_body("Name a fish.", max_tokens=8), "stream": True}) as s:
            assert "event: done" in s.read().decode()
        assert client.get(CONTENT).json()["total"] == 2
        assert rec["id"] in postgres.dump(pg_url)  # the record is in PostgreSQL
        assert client.delete(f"{CONTENT}/{rec['id']}").status_code == 204
        assert client.get(f"{CONTENT}/{rec['id']}").status_code == 404
    assert not list((tmp_path / "data").rglob("*.db")), "a SQLite database was written beside PostgreSQL"


def test_a_restart_on_postgres_fails_what_a_crash_left_unfinished(tmp_path, pg_url):  # noqa: F811
    settings = make_settings(tmp_path / "data", database_url=pg_url, preload=False)
    db = Database(pg_url)
    db.migrate()
    with db.session() as s:
        s.add(
            ContentRow(
                id="crashed-0000",
                content_type="text",
                status="running",
                prompt="lost",
                quality="standard",
                params=TEXT_SETTINGS,
                extra={},
                created_at=datetime.now(UTC),
            )
        )
    db.dispose()
    with running_app(settings) as client:
        assert_failed(client.get(f"{CONTENT}/crashed-0000").json(), "interrupted")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_upgrade_an_existing_history(tmp_path, request, backend):
    """A database made at revision 0001, with a record in the old params shape, upgrades to the head."""
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'old.db'}"
    db = Database(url)
    cfg = db.alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            sa.text(
                "INSERT INTO content (id, content_type, status, prompt, quality, params, extra, created_at) "
                "VALUES ('old-1', 'text', 'succeeded', 'hi', 'standard', :params, '{}', :now)"
            ),
            {"params": '{"max_tokens": 8, "raw": true, "messages": null}', "now": datetime.now(UTC)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO models (name, content_type, engine, source, path, sha256, size_bytes, mtime_ns, "
                "added_at) VALUES ('mine', 'text', 'llama.cpp', 'user', '/m.gguf', :h, 1, 1, :now)"
            ),
            {"h": "a" * 64, "now": datetime.now(UTC)},
        )
    db.migrate()
    current, head = db.migration_state()
    assert current == head
    with db.session() as s:
        row = s.get(ContentRow, "old-1")
        assert row.params == {"max_tokens": 8} and row.extra == {"raw": True, "messages": None}
    columns = {c["name"] for c in sa.inspect(db.engine).get_columns("models")}
    assert {"served_model", "api_key_env"} <= columns
    if backend == "postgresql":  # PostgreSQL enforces a VARCHAR's length: OpenVINO's version needs 51 characters
        content = {c["name"]: c["type"] for c in sa.inspect(db.engine).get_columns("content")}
        assert content["engine_version"].length == 200 and "search_tsv" in content
    db.check_writable()
    db.dispose()


def test_a_read_only_postgres_is_not_writable(postgres, pg_url):  # noqa: F811
    database = pg_url.rsplit("/", 1)[1]
    admin = sa.create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    admin.dispose()
    db = Database(pg_url)
    with pytest.raises(DatabaseUnavailable, match="read-only"):
        db.check_writable()
    db.dispose()


def test_a_broker_that_is_down_fails_the_request_visibly(tmp_path, pg_url):  # noqa: F811
    """The celery mode with no Redis behind GENFORGE_BROKER_URL: 503 broker_unavailable and a failed record,
    never a record left pending with no task behind it."""
    pytest.importorskip("celery", reason="celery is not installed (pip install 'genforge[distributed]')")
    broker = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(
        tmp_path / "data", database_url=pg_url, queue="celery", broker_url=broker, artifact_dir=tmp_path / "shared"
    )
    with running_app(settings) as client:
        resp = client.post(GENERATE, json=text_body(max_tokens=8))
        assert_error(resp, 503, "broker_unavailable")
        assert resp.headers["Retry-After"]
        rec = failed_record(client, resp, "broker_unavailable")
        assert rec["status"] == "failed"
        ready = client.get("/readyz").json()
        assert not ready["ready"] and "unreachable" in ready["checks"]["workers"]["detail"]
