from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter(prefix="/api/v1/models", tags=["models"])


@router.get("")
def list_models(request: Request) -> dict:
    runtime = request.app.state.runtime
    return {"items": runtime.catalog.entries(), "default_text_model": runtime.settings.default_text_model}
