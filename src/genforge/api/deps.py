"""FastAPI dependencies: the only way routers reach the runtime's parts."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from genforge.catalog import ModelCatalog
from genforge.runtime import Runtime
from genforge.service import ContentService


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def service(request: Request) -> ContentService:
    return request.app.state.runtime.service


def catalog(request: Request) -> ModelCatalog:
    return request.app.state.runtime.catalog


RuntimeDep = Annotated[Runtime, Depends(runtime)]
ServiceDep = Annotated[ContentService, Depends(service)]
CatalogDep = Annotated[ModelCatalog, Depends(catalog)]
