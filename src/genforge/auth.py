"""API keys, per-key limits, and the content service as one key sees it.

A key's token is `gf_<id>_<secret>` (the id names the key in records and logs; the secret is 256 random
bits). It is shown once, by `genforge keys create`; the database keeps only its sha256, compared in
constant time. Keys are looked up on every request (one indexed read), so a revocation made by the CLI
while the server runs takes effect on the next request. Auth is on as soon as any key has been created
(a revoked one included: revoking the last key does not open the server), or always with
GENFORGE_AUTH=required. The HTTP side (who may call what) is api/auth.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from genforge.config import Settings
from genforge.contenttypes import ContentRecord, spec_of
from genforge.db import ApiKeyRow, Database
from genforge.errors import Forbidden, InvalidRequest, NotFound, TooManyJobs
from genforge.schemas import GenerateRequest

SCOPES = ("read", "generate", "admin")  # each includes the ones before it
PREFIX = "gf_"
ID_LEN = 12
_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400}
_PERIODS["day"] = 86400
RATE_MAX = 1_000_000_000  # the largest count, and the most units in a period, of a rate


def parse_rate(text: str) -> tuple[int, float]:
    """'60/min' -> (60, 60.0): that many requests per period, as a token bucket of that size."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*", text.lower())
    # a period of 0 (`1/0s`) would divide by zero on every request with the key; both numbers fit the columns
    numbers = (int(m.group(1)), int(m.group(2) or 1)) if m else ()
    if m and m.group(3) in _PERIODS and not all(1 <= n <= RATE_MAX for n in numbers):
        raise InvalidRequest(
            f"rate {text!r}: the count and the period's number must each be 1 to {RATE_MAX}",
            field="rate",
            hint="Write it like 60/min, 5/s, 1000/hour or 10/5min.",
        )
    if not m or m.group(3) not in _PERIODS:
        raise InvalidRequest(
            f"rate {text!r} is not COUNT/PERIOD",
            field="rate",
            hint="Write it like 60/min, 5/s, 1000/hour or 10/5min.",
        )
    return int(m.group(1)), float(int(m.group(2) or 1) * _PERIODS[m.group(3)])


def format_rate(count: int | None, period_s: float | None) -> str:
    if not count or not period_s:
        return "-"
    names = {1: "s", 60: "min", 3600: "hour", 86400: "day"}
    return f"{count}/{names[int(period_s)]}" if period_s in names else f"{count}/{period_s:g}s"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Caller:
    """An authenticated key, as a request carries it."""

    id: str
    name: str
    scope: str
    models: tuple[str, ...] | None
    rate: tuple[int, float] | None
    max_jobs: int | None

    def can(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    @property
    def admin(self) -> bool:
        return self.scope == "admin"


def _caller(row: ApiKeyRow) -> Caller:
    rate = (row.rate_count, row.rate_period_s) if row.rate_count else None
    return Caller(row.id, row.name, row.scope, tuple(row.models) if row.models else None, rate, row.max_jobs)


def _public(row: ApiKeyRow) -> dict:
    """A key as `keys list` shows it: never its token or hash."""
    return {
        "id": row.id,
        "name": row.name,
        "scope": row.scope,
        "models": list(row.models) if row.models else None,
        "rate": format_rate(row.rate_count, row.rate_period_s),
        "max_jobs": row.max_jobs,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


ANY_KEY = select(ApiKeyRow.id).limit(1)


class KeyStore:
    def __init__(self, db: Database):
        self.db = db
        self._exists = False  # keys are never deleted, so once true it stays true

    def create(
        self,
        name: str,
        scope: str,
        models: list[str] | None = None,
        rate: str | None = None,
        max_jobs: int | None = None,
    ) -> tuple[dict, str]:
        """A new key: (its public description, its token). The token is not stored and cannot be shown again."""
        if scope not in SCOPES:
            raise InvalidRequest(f"scope {scope!r} is not one of {', '.join(SCOPES)}", field="scope")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
            raise InvalidRequest(f"name {name!r}: use letters, digits, '.', '_' or '-'", field="name")
        if max_jobs is not None and max_jobs < 1:
            raise InvalidRequest("max-jobs must be at least 1", field="max_jobs")
        if models is not None and (not models or any(not m.strip() for m in models)):
            # an empty list would be stored as "no restriction", the opposite of what it says
            raise InvalidRequest(
                f"models {models!r}: name at least one model, each non-empty (leave models out for all models)",
                field="models",
            )
        rate_count, rate_period = parse_rate(rate) if rate is not None else (None, None)
        key_id = secrets.token_hex(ID_LEN // 2)
        token = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        with self.db.session() as s:
            if s.scalar(select(ApiKeyRow.id).where(ApiKeyRow.name == name, ApiKeyRow.revoked_at.is_(None))):
                raise InvalidRequest(f"an active key named {name!r} exists", field="name", hint="Revoke it first.")
            row = ApiKeyRow(
                id=key_id,
                name=name,
                token_sha256=hash_token(token),
                scope=scope,
                models=sorted(set(models)) if models else None,
                rate_count=rate_count,
                rate_period_s=rate_period,
                max_jobs=max_jobs,
                created_at=datetime.now(UTC),
            )
            s.add(row)
            s.flush()
            return _public(row), token

    def list(self) -> list[dict]:
        with self.db.session() as s:
            return [_public(r) for r in s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))]

    def revoke(self, name: str) -> dict:
        with self.db.session() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.name == name, ApiKeyRow.revoked_at.is_(None)))
            if row is None:
                raise NotFound(
                    f"no active key named {name!r}", field="name", hint="See the keys with `genforge keys list`."
                )
            row.revoked_at = datetime.now(UTC)
            return _public(row)

    def active_count(self) -> int:
        with self.db.session() as s:
            return len(s.scalars(select(ApiKeyRow.id).where(ApiKeyRow.revoked_at.is_(None))).all())

    def exists(self) -> bool:
        if not self._exists:  # asked on every request while the server has no key: a bare query, no ORM session
            with self.db.connection() as conn:
                self._exists = conn.execute(ANY_KEY).first() is not None
        return self._exists

    def lookup(self, token: str) -> Caller | None:
        """The active key whose token this is, or None (unknown, malformed or revoked)."""
        if not token.startswith(PREFIX) or len(token) < len(PREFIX) + ID_LEN + 2 or token[len(PREFIX) + ID_LEN] != "_":
            return None
        with self.db.session() as s:
            row = s.get(ApiKeyRow, token[len(PREFIX) : len(PREFIX) + ID_LEN])
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(row.token_sha256, hash_token(token)):
                return None
            return _caller(row)


class RateLimiter:
    """One token bucket per key: `count` requests at once, refilled at count/period per second."""

    def __init__(self):
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str, count: int, period_s: float) -> float | None:
        """None when the request may go; else the seconds until the bucket holds one token again."""
        per_s = count / period_s
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(count), now))
            tokens = min(float(count), tokens + (now - last) * per_s)
            if tokens >= 1:
                self._buckets[key_id] = (tokens - 1, now)
                return None
            self._buckets[key_id] = (tokens, now)
            return (1 - tokens) / per_s


class JobSlots:
    """Jobs each key has pending or running, against its max_jobs."""

    def __init__(self):
        self._active: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, caller: Caller) -> None:
        with self._lock:
            n = self._active.get(caller.id, 0)
            if caller.max_jobs is not None and n >= caller.max_jobs:
                raise TooManyJobs(
                    f"the key {caller.name!r} has {n} job(s) pending or running, its limit is {caller.max_jobs}",
                    details={"retry_after": 1, "limit": caller.max_jobs},
                )
            self._active[caller.id] = n + 1

    def release(self, key_id: str) -> None:
        with self._lock:
            n = self._active.get(key_id, 1) - 1
            if n > 0:
                self._active[key_id] = n
            else:
                self._active.pop(key_id, None)

    @contextmanager
    def held(self, caller: Caller):
        self.acquire(caller)
        try:
            yield
        finally:
            self.release(caller.id)


class Auth:
    """The server's keys and limits (one per app)."""

    def __init__(self, settings: Settings, db: Database):
        self.settings = settings
        self.keys = KeyStore(db)
        self.limiter = RateLimiter()
        self.slots = JobSlots()

    def active(self) -> bool:
        return self.settings.auth == "required" or self.keys.exists()


class CallerService:
    """The ContentService as one key sees it: its models, its own records (admin: all), its job limit.
    Scopes (who may read, generate, delete) are checked per HTTP method in api/auth.py."""

    def __init__(self, svc, caller: Caller, slots: JobSlots):
        self.svc, self.caller, self.slots = svc, caller, slots
        self.runner = svc.runner
        # Shared by every key (scopes still apply per HTTP method): the personas, and the database for batch
        # rows, whose records are read back through get() with its ownership check.
        self.personas, self.db = svc.personas, svc.db

    def _owned(self, content_id: str) -> ContentRecord:
        rec = self.svc.get(content_id)
        if not self.caller.admin and rec.owner != self.caller.id:
            # The same answer as for an unknown id: another key's ids do not leak.
            raise NotFound(f"no content with id {content_id!r}", field="id")
        return rec

    def _check_model(self, req: GenerateRequest) -> None:
        if self.caller.models is None:
            return
        model = spec_of(req.content_type).plan(req, self.svc.settings, self.svc.catalog).model
        if model not in self.caller.models:
            raise Forbidden(
                f"the key {self.caller.name!r} may not use model {model!r} (it may use "
                f"{', '.join(self.caller.models)})",
                field="model",
            )

    def submit(self, req: GenerateRequest):
        self._check_model(req)
        self.slots.acquire(self.caller)
        try:
            job = self.svc.submit(req, owner=self.caller.id)
        except BaseException:
            self.slots.release(self.caller.id)
            raise
        job.listen(lambda event: event["type"] == "final" and self.slots.release(self.caller.id))
        return job

    def generate(self, req: GenerateRequest, emit=None, cancel=None) -> ContentRecord:
        self._check_model(req)
        with self.slots.held(self.caller):
            return self.svc.generate(req, emit, cancel, owner=self.caller.id)

    def get(self, content_id: str) -> ContentRecord:
        return self._owned(content_id)

    def wait(self, job, emit=None, cancel=None) -> ContentRecord:
        return self.svc.wait(job, emit, cancel)  # a job this key submitted

    def list(self, content_type=None, status=None, limit: int = 50, offset: int = 0, **filters):
        owner = None if self.caller.admin else self.caller.id
        return self.svc.list(content_type, status, limit, offset, owner=owner, **filters)

    def artifact(self, content_id: str):
        self._owned(content_id)
        return self.svc.artifact(content_id)

    def cancel(self, content_id: str, wait: bool = True):
        self._owned(content_id)
        return self.svc.cancel(content_id, wait)

    def delete(self, content_id: str) -> None:
        self._owned(content_id)
        self.svc.delete(content_id)

    def verify(self, content_id: str):
        self._owned(content_id)
        return self.svc.verify(content_id)

    def credentials_of(self, content_id: str):
        self._owned(content_id)
        return self.svc.credentials_of(content_id)
