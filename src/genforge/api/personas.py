"""Personas: create, read (latest or a version), edit (a new version) and delete."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Response

from genforge.api.deps import CallerDep, PersonasDep
from genforge.api.errors import COMMON, error_responses
from genforge.platform.personas import Persona, PersonaBody, PersonaPatch

router = APIRouter(prefix="/api/v1/personas", tags=["personas"])


@router.post("", status_code=201, response_model=Persona, responses=error_responses(409, *COMMON))
def create_persona(body: PersonaBody, personas: PersonasDep, caller: CallerDep) -> Persona:
    return personas.create(body, caller)


@router.get("", response_model=list[Persona], responses=error_responses(*COMMON))
def list_personas(personas: PersonasDep, caller: CallerDep) -> list[Persona]:
    return personas.list(caller)


@router.get("/{name}", response_model=Persona, responses=error_responses(404, *COMMON))
def get_persona(name: str, personas: PersonasDep, caller: CallerDep) -> Persona:
    return personas.get(name, caller)


@router.get("/{name}/versions/{version}", response_model=Persona, responses=error_responses(404, *COMMON))
def get_persona_version(
    name: str, personas: PersonasDep, caller: CallerDep, version: int = Path(ge=1, le=10**9)
) -> Persona:
    return personas.get(name, caller, version)


@router.patch("/{name}", response_model=Persona, responses=error_responses(404, *COMMON))
def edit_persona(name: str, body: PersonaPatch, personas: PersonasDep, caller: CallerDep) -> Persona:
    return personas.edit(name, body, caller)


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted, every version."}, **error_responses(404, 409, *COMMON)},
)
def delete_persona(name: str, personas: PersonasDep, caller: CallerDep, force: bool = Query(False)) -> Response:
    personas.delete(name, caller, force=force)
    return Response(status_code=204)
