"""What every /v1 route shares: the caller's service (`Svc`) and the documented error answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gantry.api.http.auth import authenticate_async, request_token
from gantry.api.http.models import Problem
from gantry.api.service import Service

ROW_ID_MAX = 2**63 - 1  # ids are SQL BIGINTs: a larger one in a query cannot even be compared

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no token, or one unknown, expired or revoked"},
    429: {"model": Problem, "description": "over the token's request rate or the owner's job quota"},
    503: {"model": Problem, "description": "a service this API needs cannot be reached"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such job, or another owner's"}
}
BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the body cannot be parsed (not UTF-8, a broken form)"},
    413: {"model": Problem, "description": "the body is over GANTRY_API_MAX_BODY_BYTES"},
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": Problem, "description": "bad input: names the field and the allowed values"}
}


# Declares the bearer scheme in the OpenAPI schema (the docs' "Authorize" button, clients' generators);
# `authenticate` reads the header itself, so the answer to a missing token is our 401, not FastAPI's 403.
BEARER = HTTPBearer(auto_error=False, description="a token from `gantry token create`")


async def service(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None
) -> Service:
    """The service layer acting for the request's caller (401 without a valid token). Async: a
    token this process checked within GANTRY_API_AUTH_CACHE_SECONDS costs no trip to a thread."""
    caller = await authenticate_async(request, request_token(request))
    svc: Service = request.app.state.service
    return svc.scoped(caller)


Svc = Annotated[Service, Depends(service)]
