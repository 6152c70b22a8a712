"""What every /v1 route shares: the caller's service (`Svc`) and the documented error answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from gantry.api.http.auth import authenticate, request_token
from gantry.api.http.models import Problem
from gantry.api.service import Service

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no token, or one unknown, expired or revoked"},
    429: {"model": Problem, "description": "over the token's request rate or the owner's job quota"},
    503: {"model": Problem, "description": "a service this API needs cannot be reached"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such job, or another owner's"}
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": Problem, "description": "bad input: names the field and the allowed values"}
}


def service(request: Request) -> Service:
    """The service layer acting for the request's caller (401 without a valid token)."""
    caller = authenticate(request, request_token(request))
    svc: Service = request.app.state.service
    return svc.scoped(caller)


Svc = Annotated[Service, Depends(service)]
