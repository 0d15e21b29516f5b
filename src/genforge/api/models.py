"""The model catalog over HTTP."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from genforge.api.deps import CatalogDep, RuntimeDep
from genforge.api.errors import COMMON, error_responses
from genforge.core.catalog import ModelEntry

router = APIRouter(prefix="/api/v1/models", tags=["models"])


class ModelListing(BaseModel):
    items: list[ModelEntry]
    default_text_model: str


@router.get("", response_model=ModelListing, responses=error_responses(*COMMON))
def list_models(catalog: CatalogDep, runtime: RuntimeDep) -> ModelListing:
    return ModelListing(items=catalog.entries(), default_text_model=runtime.settings.default_text_model)
