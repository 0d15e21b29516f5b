"""FastAPI dependencies: the only way routers reach the runtime's parts and the request's Caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from genforge.api.auth import caller_of
from genforge.core.caller import Caller
from genforge.core.catalog import ModelCatalog
from genforge.core.service import ContentService
from genforge.platform.personas import PersonaStore
from genforge.platform.posts import PostService
from genforge.runtime import Runtime


# async: they do no I/O, and FastAPI runs a plain function dependency on its thread pool (a hand-off to
# another thread and back on every request).
def _runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def runtime(request: Request) -> Runtime:
    return _runtime(request)


async def catalog(request: Request) -> ModelCatalog:
    return _runtime(request).catalog


async def service(request: Request) -> ContentService:
    return _runtime(request).service


async def posts(request: Request) -> PostService:
    return _runtime(request).posts


async def personas(request: Request) -> PersonaStore:
    return _runtime(request).personas


RuntimeDep = Annotated[Runtime, Depends(runtime)]
ServiceDep = Annotated[ContentService, Depends(service)]
PostsDep = Annotated[PostService, Depends(posts)]
PersonasDep = Annotated[PersonaStore, Depends(personas)]
CatalogDep = Annotated[ModelCatalog, Depends(catalog)]
# The request's Caller: every core call takes it (the core decides what it may see and run).
CallerDep = Annotated[Caller, Depends(caller_of)]
