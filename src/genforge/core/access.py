"""API keys and per-key limits: the key store (tokens to Callers), the rate limiter and the job slots.

A key's token is `gf_<id>_<secret>` (the id names the key in records and logs; the secret is 256 random
bits). It is shown once, by `genforge keys create`; the database keeps only its sha256, compared in
constant time. Keys are looked up on every request (one indexed read), so a revocation made by the CLI
while the server runs takes effect on the next request. Auth is on as soon as any key has been created
(a revoked one included: revoking the last key does not open the server), or always with
GENFORGE_AUTH=required. The HTTP side (who may call what) is api/auth.py; what a Caller may see and run is
decided in the core (core/caller.py, core/service.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from genforge.config import Settings
from genforge.core.caller import SCOPES, Caller
from genforge.errors import InvalidRequest, NotFound, TooManyJobs
from genforge.stores.db import ApiKeyRow, Database

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


def _caller(row: ApiKeyRow) -> Caller:
    rate = (row.rate_count, row.rate_period_s) if row.rate_count and row.rate_period_s else None
    scope = next(s for s in SCOPES if s == row.scope)  # the column holds one of SCOPES (KeyStore.create)
    return Caller(row.id, row.name, scope, tuple(row.models) if row.models else None, rate, row.max_jobs)


def _public(row: ApiKeyRow) -> dict[str, Any]:
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
    ) -> tuple[dict[str, Any], str]:
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

    def list(self) -> list[dict[str, Any]]:
        with self.db.session() as s:
            return [_public(r) for r in s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))]

    def revoke(self, name: str) -> dict[str, Any]:
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

    def __init__(self) -> None:
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

    def __init__(self) -> None:
        self._active: dict[str | None, int] = {}
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

    def release(self, caller: Caller) -> None:
        with self._lock:
            n = self._active.get(caller.id, 1) - 1
            if n > 0:
                self._active[caller.id] = n
            else:
                self._active.pop(caller.id, None)


class Auth:
    """The server's keys and limits (one per app)."""

    def __init__(self, settings: Settings, db: Database):
        self.settings = settings
        self.keys = KeyStore(db)
        self.limiter = RateLimiter()

    def active(self) -> bool:
        return self.settings.auth == "required" or self.keys.exists()
