"""Who may call the API: the Bearer key dependency, its rate limit, and scopes by HTTP method.

Routers that need a key are included with `dependencies=GUARD` (see app.py); /healthz, /readyz, the
OpenAPI schema, the docs and the web UI's static files need none, /metrics only unless
GENFORGE_METRICS_PUBLIC=1. Scopes follow the method: GET reads (`read`), POST generates or cancels
(`generate`), DELETE deletes (`admin`). The key becomes the request's `Caller` (core/caller.py; `LOCAL`, the
operator, while auth is off), which the routes pass into every core call: what it may see and run is decided
in the core.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from genforge.api.errors import ErrorBody, OpenAIErrorBody
from genforge.core.caller import LOCAL, Caller
from genforge.errors import Forbidden, RateLimited, Unauthorized

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `genforge keys create`; needed as soon as the server has a key.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
NEEDS = {"GET": "read", "HEAD": "read", "POST": "generate", "PUT": "generate", "PATCH": "generate"}


def authenticate(request: Request, creds: Credentials) -> Caller | None:
    """The calling key (None while auth is off); 401, 429 or 403 otherwise."""
    auth = request.app.state.auth
    if not auth.active():
        return None
    if creds is None:
        raise Unauthorized("this server needs an API key: send `Authorization: Bearer KEY`")
    caller = auth.keys.lookup(creds.credentials)
    if caller is None:
        raise Unauthorized("the API key is not valid (unknown or revoked)")
    if caller.rate is not None:
        wait = auth.limiter.take(caller.id, *caller.rate)
        if wait is not None:
            raise RateLimited(
                f"the key {caller.name!r} is over its rate of {caller.rate[0]} requests per {caller.rate[1]:g} s",
                details={"retry_after": max(1, math.ceil(wait))},
            )
    need = NEEDS.get(request.method, "admin")
    if not caller.can(need):
        raise Forbidden(f"the key {caller.name!r} has scope {caller.scope!r}; {request.method} needs {need!r}")
    return caller


def authenticate_metrics(request: Request, creds: Credentials) -> Caller | None:
    if request.app.state.auth.settings.metrics_public:
        return None
    return authenticate(request, creds)


async def caller_of(caller: Annotated[Caller | None, Depends(authenticate)]) -> Caller:
    """The request's Caller: its key, or the local operator while auth is off. (async: it does no I/O, and
    FastAPI would run a plain function on its thread pool, a hand-off to another thread and back.)"""
    return LOCAL if caller is None else caller


def responses(body: type = ErrorBody) -> dict:
    """The answers of the key check, for the OpenAPI schema."""
    return {
        401: {"model": body, "description": "No API key, or one that is unknown or revoked (WWW-Authenticate)"},
        403: {"model": body, "description": "The key's scope or models do not allow this"},
        429: {"model": body, "description": "Over the key's rate or job limit, or the queue is full (Retry-After)"},
    }


GUARD = [Depends(authenticate)]
RESPONSES = responses()
OPENAI_RESPONSES = responses(OpenAIErrorBody)
