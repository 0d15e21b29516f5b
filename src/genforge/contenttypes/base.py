"""What a content type is: one entry with everything genforge needs to know about it (see __init__.py)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ValidationError

from genforge.engines.base import IdentityPolicy, TextPolicy
from genforge.engines.params import EngineParams
from genforge.errors import InvalidRequest, ModelNotFound, ModelUnavailable

if TYPE_CHECKING:
    from genforge.config import Settings
    from genforge.contenttypes.records import RecordBase
    from genforge.contenttypes.request import GenerateRequest
    from genforge.engines.base import EngineOutput, GenerationJob


@dataclass(frozen=True)
class Plan:
    """A request made complete before any record exists: the model, the typed parameters the engine gets and
    the record stores (what a client can send again), and the request's control inputs."""

    model: str | None
    params: EngineParams
    messages: list[dict[str, Any]] | None = None
    raw: bool = False
    fallback_reason: str | None = None
    # Video: the stored records it is made of, by role: (content id, the content type it must be).
    inputs: dict[str, tuple[str, str]] | None = None
    # Text: what the output must respect (genforge.engines.base.TextPolicy); set by personas and posts.
    policy: TextPolicy | None = None
    # Images: the persona's face, measured on the output (genforge.core.identity); set by personas.
    identity: IdentityPolicy | None = None


class StoredRow(Protocol):
    """What a record section reads of a stored row (genforge.stores.db.ContentRow has it)."""

    extra: dict[str, Any]


class ModelLookup(Protocol):
    """What a planner asks of the model catalog (genforge.core.catalog.ModelCatalog implements it). Declared here,
    below the catalog, so that the content types never import the layer that uses them."""

    def default_for(self, content_type: str) -> str | None: ...

    def engine_of(self, name: str) -> tuple[str, str | None] | None: ...

    def type_of(self, name: str) -> str | None: ...

    def installed_names(self, content_type: str | None = None) -> list[str]: ...

    def pullable(self, name: str) -> bool: ...


Planner = Callable[["GenerateRequest", "Settings", ModelLookup], Plan]
Validator = Callable[["EngineOutput", "GenerationJob"], None]


@dataclass(frozen=True)
class ContentTypeSpec:
    """One content type: how requests are planned, what its record holds, how output is judged and stored."""

    name: str
    params: type[BaseModel]  # what a client may send as `params`
    settings: Any  # the complete parameters the planner makes (a model, or a union of models)
    facts: type[BaseModel]  # what its engines report with their output (genforge.engines.base)
    record: type[RecordBase]  # the record's typed section (a RecordBase subclass)
    plan: Planner
    validate: Validator
    media_type: str  # of the artifact
    suffix: str  # of the artifact file
    no_model_hint: str  # how to get a model when none is installed
    check_model_path: Callable[[Path], str] | None  # `models add PATH --type NAME`: checks PATH, returns engine
    record_section: Callable[[Any], dict[str, Any]]  # the section's fields from a stored row


def pydantic_error(exc: ValidationError, prefix: str = "") -> InvalidRequest:
    """The first pydantic error as an InvalidRequest naming its field."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    return InvalidRequest(f"{field}: {err['msg'].removeprefix('Value error, ')}", field=field)


def parse_params(model: type[BaseModel], params: dict[str, Any]) -> Any:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise pydantic_error(exc, "params") from None


def draw_seed(given: int | None) -> int:
    return secrets.randbelow(2**31) if given is None else given


def check_model(catalog: ModelLookup, name: str | None, content_type: str) -> None:
    """A named model must exist (404 listing the installed ones) and make this content type."""
    if name is None:
        return
    made = catalog.type_of(name)
    if made is None and catalog.pullable(name):
        raise ModelUnavailable(f"model {name!r} is not pulled yet", hint=f"Pull it with `genforge models pull {name}`.")
    if made is None:
        installed = catalog.installed_names()
        raise ModelNotFound(
            f"unknown model {name!r}; installed: {', '.join(installed) or 'none'}",
            field="model",
            details={"installed": installed},
        )
    if made != content_type:
        raise InvalidRequest(f"model {name!r} makes {made}, not {content_type}", field="model")


def facts_of(row: StoredRow, facts: type[BaseModel]) -> dict[str, Any]:
    """The engine facts stored with a row (its `extra` column), the declared keys only."""
    extra = row.extra or {}
    return {k: extra[k] for k in facts.model_fields if k in extra}
