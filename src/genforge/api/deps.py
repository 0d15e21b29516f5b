"""FastAPI dependencies: the only way routers reach the runtime's parts."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from genforge.api.auth import caller_service
from genforge.catalog import ModelCatalog
from genforge.runtime import Runtime
from genforge.service import ContentService


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def catalog(request: Request) -> ModelCatalog:
    return request.app.state.runtime.catalog


# The content service as the calling API key sees it (auth.CallerService; the plain service while auth is off).
service = caller_service

RuntimeDep = Annotated[Runtime, Depends(runtime)]
ServiceDep = Annotated[ContentService, Depends(caller_service)]
CatalogDep = Annotated[ModelCatalog, Depends(catalog)]
