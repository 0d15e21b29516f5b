"""Personas: create, read (latest or a version), edit (a new version) and delete."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Response

from genforge.api.deps import ServiceDep
from genforge.api.errors import COMMON, error_responses
from genforge.personas import Persona, PersonaBody, PersonaPatch

router = APIRouter(prefix="/api/v1/personas", tags=["personas"])


@router.post("", status_code=201, response_model=Persona, responses=error_responses(409, *COMMON))
def create_persona(body: PersonaBody, svc: ServiceDep) -> Persona:
    return svc.personas.create(body)


@router.get("", response_model=list[Persona], responses=error_responses(*COMMON))
def list_personas(svc: ServiceDep) -> list[Persona]:
    return svc.personas.list()


@router.get("/{name}", response_model=Persona, responses=error_responses(404, *COMMON))
def get_persona(name: str, svc: ServiceDep) -> Persona:
    return svc.personas.get(name)


@router.get("/{name}/versions/{version}", response_model=Persona, responses=error_responses(404, *COMMON))
def get_persona_version(name: str, svc: ServiceDep, version: int = Path(ge=1, le=10**9)) -> Persona:
    return svc.personas.get(name, version)


@router.patch("/{name}", response_model=Persona, responses=error_responses(404, *COMMON))
def edit_persona(name: str, body: PersonaPatch, svc: ServiceDep) -> Persona:
    return svc.personas.edit(name, body)


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted, every version."}, **error_responses(404, 409, *COMMON)},
)
def delete_persona(name: str, svc: ServiceDep, force: bool = Query(False)):
    svc.personas.delete(name, force=force)
    return Response(status_code=204)
