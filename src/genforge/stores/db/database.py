"""Engine, sessions and migrations. SQLite (the default) runs in WAL mode with foreign keys and a busy timeout;
PostgreSQL (GENFORGE_DATABASE_URL=postgresql+psycopg://...) runs the same migrations and queries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, create_engine, event, make_url, text
from sqlalchemy.exc import DataError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from genforge.errors import DatabaseUnavailable, InvalidRequest
from genforge.media.private import private_file

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration's revision (a test holds it equal to Alembic's head). A database already there needs no
# Alembic at all: the server then never imports it (about 11 MB of memory and a quarter second of start-up).
HEAD_REVISION = "0013"
BUSY_TIMEOUT_MS = 5000  # how long a write waits for another writer before it is database_unavailable


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite database file 0600 (in a 0700 folder) before SQLite does: it would create it 0644, and
    it gives the -wal and -shm files it makes later the database file's mode."""
    name = make_url(url).database
    if name and name != ":memory:" and not name.startswith("file:"):
        private_file(Path(name))


@contextmanager
def typed_errors() -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        raise DatabaseUnavailable(
            f"the database cannot be used right now: {exc.orig or exc}", details={"retry_after": 2}
        ) from exc
    except DataError as exc:
        if "NUL" not in str(exc.orig):  # PostgreSQL text cannot hold U+0000 (SQLite's can)
            raise
        raise InvalidRequest(
            "a text of the request contains a NUL character (U+0000), which the database (PostgreSQL) cannot store",
            hint="Remove the NUL characters and send the request again.",
        ) from exc


class Database:
    def __init__(self, url: str):
        self.url = url
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            _private_sqlite_file(url)
        # A server database may restart or drop idle connections: check each one as it leaves the pool.
        self.engine = create_engine(url) if self.sqlite else create_engine(url, pool_pre_ping=True)
        if self.sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest revision (append-only migrations)."""
        if self.current_revision() == HEAD_REVISION:
            return
        from alembic import command

        with self.engine.begin() as conn:
            cfg = self.alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def alembic_config(self):
        """Alembic's configuration for this database's migrations (Alembic is imported only when needed)."""
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url)
        return cfg

    def current_revision(self) -> str | None:
        """The schema's revision as Alembic recorded it; None for a database it has not migrated yet."""
        with self.engine.connect() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except (OperationalError, ProgrammingError) as exc:  # no such table (SQLite; PostgreSQL)
                if "alembic_version" not in str(exc.orig):
                    raise
                return None

    def wait_migrated(self, timeout_s: float = 120.0) -> None:
        """Wait until another process (the API) has brought the schema to the newest revision."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                current, head = self.migration_state()
                if current == head:
                    return
                detail = f"schema {current}, newest {head}"
            except OperationalError as exc:
                detail = str(exc.orig or exc)
            if time.monotonic() > deadline:
                raise DatabaseUnavailable(
                    f"the database is not at the newest schema ({detail})",
                    hint="Start `genforge serve` (it migrates the database) before the workers.",
                )
            time.sleep(0.5)

    def migration_state(self) -> tuple[str | None, str | None]:
        """(current revision, newest revision)."""
        return self.current_revision(), HEAD_REVISION

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One session per unit of work; commits on success, rolls back on error. A database that cannot be
        reached or written (locked past the busy timeout, disk full, I/O error) is a typed error."""
        with typed_errors(), self.sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A bare connection for a hot read (no ORM session: a third of the cost), with the same typed errors."""
        with typed_errors(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A bare connection in a transaction, committed on success, for the hot writes on every request's path."""
        with typed_errors(), self.engine.begin() as conn:
            yield conn

    def check_writable(self) -> None:
        """Raise DatabaseUnavailable unless a write transaction can begin within a moment (readiness)."""
        try:
            with self.engine.connect() as conn:
                if self.sqlite:
                    conn.exec_driver_sql("PRAGMA busy_timeout=250")
                    try:
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                        conn.exec_driver_sql("ROLLBACK")
                    finally:
                        conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                elif conn.exec_driver_sql("SHOW transaction_read_only").scalar() != "off":  # PostgreSQL
                    raise DatabaseUnavailable("the database is read-only (a standby, or default_transaction_read_only)")
        except OperationalError as exc:
            raise DatabaseUnavailable(f"the database cannot be written: {exc.orig or exc}") from exc

    def dispose(self) -> None:
        self.engine.dispose()
