"""API keys over HTTP, for admin keys only: list, create (the token is in the answer, once), revoke.

Always an admin key, also while auth is off: the first key is made with `genforge keys create`, by whoever
can reach the data dir, never by whoever can reach the port.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from genforge.api.auth import authenticate
from genforge.api.errors import COMMON, error_responses
from genforge.core.caller import Caller, Scope
from genforge.errors import Forbidden, Unauthorized


def admin_key(caller: Annotated[Caller | None, Depends(authenticate)]) -> Caller:
    if caller is None:
        raise Unauthorized(
            "managing keys over HTTP needs an admin key", hint="Create the first key with `genforge keys create`."
        )
    if not caller.admin:
        raise Forbidden(f"the key {caller.name!r} has scope {caller.scope!r}; managing keys needs 'admin'")
    return caller


router = APIRouter(prefix="/api/v1/keys", tags=["keys"], dependencies=[Depends(admin_key)])


class KeyInfo(BaseModel):
    """A key as `genforge keys list` shows it: never its token or the token's hash."""

    id: str
    name: str
    scope: Scope  # each includes the ones before it
    models: list[str] | None = Field(description="The models it may use; null: all.")
    rate: str | None = Field(description="Its request rate limit, e.g. '5/s'; null: none.")
    max_jobs: int | None = Field(description="Its limit of unfinished jobs; null: none.")
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    revoked_at: str | None = Field(json_schema_extra={"format": "date-time"})


class KeyList(BaseModel):
    items: list[KeyInfo]


class KeyCreated(BaseModel):
    key: KeyInfo
    token: str = Field(description="The key's secret, shown this once: it is not stored and cannot be shown again.")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scope: str
    models: list[str] | None = None
    rate: str | None = Field(default=None, max_length=40)
    max_jobs: int | None = Field(default=None, ge=1, le=100_000)


@router.get("", responses=error_responses(*COMMON))
def list_keys(request: Request) -> KeyList:
    return KeyList(items=request.app.state.auth.keys.list())


@router.post("", status_code=201, responses=error_responses(*COMMON))
async def create_key(body: KeyCreate, request: Request) -> KeyCreated:
    keys = request.app.state.auth.keys
    info, token = await run_in_threadpool(keys.create, body.name, body.scope, body.models, body.rate, body.max_jobs)
    return KeyCreated(key=info, token=token)


@router.delete("/{name}", responses=error_responses(404, *COMMON))
def revoke_key(name: str, request: Request) -> KeyInfo:
    return KeyInfo(**request.app.state.auth.keys.revoke(name))
