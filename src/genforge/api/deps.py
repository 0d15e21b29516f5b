from fastapi import Request

from genforge.api.auth import caller_service
from genforge.runtime import Runtime


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


# The content service as the calling API key sees it (the plain service while auth is off).
service = caller_service
