"""Per content type: turn a request into (model name, complete parameters) before any record exists.

Everything refused here is a 4xx without a record. The seed is always set: drawn when not given,
so that every record says which seed made it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from genforge.catalog import PACKAGED, QUALITY, ModelCatalog
from genforge.config import Settings
from genforge.errors import InvalidRequest, ModelNotFound
from genforge.schemas import GenerateRequest, TextParams

Planner = Callable[[GenerateRequest, Settings, ModelCatalog], tuple[str | None, dict]]


def pydantic_error(exc: ValidationError, prefix: str = "") -> InvalidRequest:
    """The first pydantic error as an InvalidRequest naming its field."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    return InvalidRequest(f"{field}: {err['msg'].removeprefix('Value error, ')}", field=field)


def parse_params(model: type[BaseModel], params: dict) -> BaseModel:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise pydantic_error(exc, "params") from None


def draw_seed(given: int | None) -> int:
    return secrets.randbelow(2**31) if given is None else given


def check_model(catalog: ModelCatalog, name: str | None, content_type: str) -> None:
    """A named model must exist (404 listing the installed ones) and make this content type."""
    if name is None:
        return
    if name not in catalog.names():
        installed = catalog.installed_names()
        raise ModelNotFound(f"unknown model {name!r}; installed: {', '.join(installed) or 'none'}",
                            field="model", details={"installed": installed})
    made = PACKAGED[name].content_type if name in PACKAGED else catalog.user_type(name)
    if made != content_type:
        raise InvalidRequest(f"model {name!r} makes {made}, not {content_type}", field="model")


def plan_text(req: GenerateRequest, settings: Settings, catalog: ModelCatalog) -> tuple[str | None, dict]:
    given = parse_params(TextParams, req.params)
    preset = QUALITY[req.quality]
    model = req.model or (settings.default_text_model if req.quality == "standard" else preset.model)
    params = {
        "max_tokens": given.max_tokens or preset.max_tokens,
        "temperature": preset.temperature if given.temperature is None else given.temperature,
        "top_p": given.top_p or preset.top_p,
        "seed": draw_seed(given.seed),
        "stop": given.stop or [],
    }
    if params["max_tokens"] >= settings.context_size:
        raise InvalidRequest(f"params.max_tokens: {params['max_tokens']} does not fit the context of "
                             f"{settings.context_size} tokens", field="params.max_tokens",
                             hint=f"Ask for fewer than {settings.context_size} tokens.")
    if req.messages:
        params["messages"] = req.messages
    if req.raw:
        params["raw"] = True
    check_model(catalog, model, "text")
    return model, params


PLANNERS: dict[str, Planner] = {"text": plan_text}


def plan(req: GenerateRequest, settings: Settings, catalog: ModelCatalog) -> tuple[str | None, dict]:
    planner = PLANNERS.get(req.content_type)
    if planner is None:  # a type without an engine in this build: the record says so (503)
        check_model(catalog, req.model, req.content_type)
        return req.model or catalog.default_for(req.content_type), dict(req.params)
    return planner(req, settings, catalog)
