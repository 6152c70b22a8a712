"""Probes: /healthz (the process answers) and /readyz (the database at this code's schema, the broker
and object storage all answer; 503 naming what is down)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The API process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a service is down; `down` names it"}})
def readyz(request: Request) -> JSONResponse:
    """Ready to take jobs: the database (at this code's schema), the broker and object storage answer."""
    checks = request.app.state.service.readiness()
    down = {name: problem for name, problem in checks.items() if problem is not None}
    body = {"status": "down" if down else "ready", "checks": {k: v or "ok" for k, v in checks.items()}}
    return JSONResponse(body, status_code=503 if down else 200)
