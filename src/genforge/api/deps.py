from fastapi import Request

from genforge.runtime import Runtime
from genforge.service import ContentService


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def service(request: Request) -> ContentService:
    return request.app.state.runtime.service
