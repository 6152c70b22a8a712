"""The dashboard's pages: sign-in, jobs, a job, the submit form (docs/api.md, "Dashboard").

Server-rendered: every value and image is in the HTML, so reading needs no JavaScript; the small
script (static/dashboard.js) only refreshes parts of the page (`?partial=` answers just that part,
rendered by the same template) and draws the metric curves. Like the JSON routes, each page calls the
service layer scoped to the signed-in caller: another owner's job is the same 404 as a missing one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from gantry.api.http.auth import authenticate
from gantry.api.http.dashboard import forms
from gantry.api.http.dashboard.session import (
    FIELD,
    CsrfRefused,
    check_signed_in_post,
    check_signin_post,
    csrf_for,
    keep_signin_csrf,
    local_path,
    session_token,
    sign_in,
    sign_out,
    signin_csrf,
    to_signin,
)
from gantry.api.schemas import JobView
from gantry.api.service import Service, api_artifact_uri
from gantry.jobs.errors import InvalidInput, JobNotFound, NotAuthorised, ServiceUnavailable, Throttled
from gantry.jobs.specs import MODELS
from gantry.jobs.store import STATES, TERMINAL

HERE = Path(__file__).parent
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
KINDS = ("train", "sample", "evaluate")

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.trim_blocks = templates.env.lstrip_blocks = True


def age(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def images_per_sec(job: JobView) -> str:
    value = job.metrics.get("images_per_sec")
    return "" if value is None or job.state != "running" else f"{value:,.0f}"


def newest_grid(job: JobView) -> Any:
    """The newest fixed-noise grid a train job wrote (keys sort in step order), or None."""
    grids = [a for a in job.artifacts if "/samples/step-" in a.key and a.key.endswith(".png")]
    return max(grids, key=lambda a: a.key) if grids else None


def sample_images(job: JobView) -> list[Any]:
    """A sample job's pictures, its grid first; at most 64 (every one is in the artifact list)."""
    images = [a for a in job.artifacts if "/images/" in a.key and a.key.endswith(".png")]
    images.sort(key=lambda a: (not a.key.endswith("/grid.png"), a.key))
    return images[:64]


def step_of(key: str) -> int | None:
    """The step in a grid's key (`.../samples/step-00001200.png`), for its caption only."""
    digits = key.rsplit("/step-", 1)[-1].split(".", 1)[0]
    return int(digits) if digits.isdigit() else None


templates.env.globals.update(
    artifact_url=api_artifact_uri,
    step_of=step_of,
    age=age,
    images_per_sec=images_per_sec,
    newest_grid=newest_grid,
    sample_images=sample_images,
    TERMINAL=TERMINAL,
)


def list_jobs(
    svc: Service, *, state: str | None = None, kind: str | None = None, model: str | None = None
) -> list[JobView]:
    """The caller's newest 200 jobs, filtered (the one place the pages list jobs)."""
    return svc.list_jobs(state=state, kind=kind, model=model, limit=200).jobs


def _caller_service(request: Request) -> Service | None:
    """The service acting for the session's caller; None without a valid session."""
    try:
        caller = authenticate(request, session_token(request))
    except NotAuthorised:
        return None
    svc: Service = request.app.state.service
    return svc.scoped(caller)


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    token = session_token(request)
    context.setdefault("csrf", csrf_for(token) if token else "")
    context.setdefault("caller", None)
    return templates.TemplateResponse(request, name, context, status_code=status)


def _refused(request: Request, exc: CsrfRefused) -> HTMLResponse:
    return _page(request, "error.html", 403, title="Refused", message=str(exc))


# -- static files (two, served from the package: nothing is fetched from elsewhere) ----------------
@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        return Response(status_code=404)
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])


# -- signing in and out -----------------------------------------------------------------------
@router.get("/signin")
def signin_form(request: Request, next: str | None = None) -> HTMLResponse:
    csrf = signin_csrf(request)
    page = _page(request, "signin.html", next=local_path(next), error=None, csrf=csrf)
    keep_signin_csrf(page, request, csrf)
    return page


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await request.form()
    try:
        check_signin_post(request, form)
    except CsrfRefused as exc:
        return _refused(request, exc)
    token, target = str(form.get("token") or "").strip(), local_path(str(form.get("next") or "/"))
    caller = request.app.state.service.authenticate(token) if token else None
    if caller is None:
        return _page(
            request,
            "signin.html",
            401,
            next=target,
            csrf=str(form.get(FIELD)),
            error="That token is unknown, expired or revoked (`gantry token create` makes one).",
        )
    response = RedirectResponse(target, status_code=303)
    sign_in(response, request, token)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    token = session_token(request)
    if token is None:
        return to_signin(request)
    try:
        check_signed_in_post(request, await request.form(), token)
    except CsrfRefused as exc:
        return _refused(request, exc)
    response = RedirectResponse("/signin", status_code=303)
    sign_out(response, request)
    return response


# -- the jobs page ----------------------------------------------------------------------------
@router.get("/")
def jobs_page(
    request: Request,
    state: str | None = None,
    kind: str | None = None,
    model: str | None = None,
    partial: str | None = None,
) -> Response:
    svc = _caller_service(request)
    if svc is None:
        return to_signin(request)
    state, kind, model = state or None, kind or None, model or None
    error, status, jobs = None, 200, []
    try:
        jobs = list_jobs(svc, state=state, kind=kind, model=model)
    except InvalidInput as exc:
        error, status = exc.message, 422
    context = {"jobs": jobs, "now": datetime.now(UTC)}
    if partial == "rows":
        return _page(request, "_rows.html", status, **context)
    filters = {"state": state, "kind": kind, "model": model}
    choices = {"state": STATES, "kind": KINDS, "model": sorted(MODELS)}
    return _page(
        request,
        "jobs.html",
        status,
        caller=svc.caller,
        filters=filters,
        choices=choices,
        error=error,
        **context,
    )


# -- a job ------------------------------------------------------------------------------------
@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, partial: str | None = None) -> Response:
    svc = _caller_service(request)
    if svc is None:
        return to_signin(request)
    try:
        job = svc.get(job_id)
    except JobNotFound:
        return _page(
            request, "error.html", 404, caller=svc.caller, title="Not found", message=f"No job {job_id}."
        )
    return _job(request, svc, job, partial=partial)


def _job(
    request: Request,
    svc: Service,
    job: JobView,
    *,
    partial: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    template = "_live.html" if partial == "live" else "job.html"
    return _page(request, template, status, caller=svc.caller, job=job, error=error)


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: str) -> Response:
    svc = _caller_service(request)
    token = session_token(request)
    if svc is None or token is None:
        return to_signin(request)
    try:
        check_signed_in_post(request, await request.form(), token)
        svc.cancel(job_id)
    except CsrfRefused as exc:
        return _refused(request, exc)
    except JobNotFound:
        return _page(
            request, "error.html", 404, caller=svc.caller, title="Not found", message=f"No job {job_id}."
        )
    except InvalidInput as exc:  # it ended meanwhile
        return _job(request, svc, svc.get(job_id), error=exc.message, status=409)
    return RedirectResponse(f"/jobs/{quote(job_id, safe='')}", status_code=303)


# -- submitting -------------------------------------------------------------------------------
def _new_form(
    request: Request,
    svc: Service,
    *,
    kind: str,
    model: str | None,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    model = forms.model_or_default(model)
    parents = [j for j in list_jobs(svc, kind="train") if j.state in ("running", "succeeded")]
    return _page(
        request,
        "new.html",
        status,
        caller=svc.caller,
        kind="sample" if kind == "sample" else "train",
        model=model,
        models=sorted(MODELS),
        datasets=forms.datasets(),
        defaults=forms.train_defaults(model),
        options=forms.option_sections(model),
        parents=parents,
        values=values or {},
        errors=errors or {},
        error=error,
    )


@router.get("/new")
def new_form(
    request: Request, kind: str = "train", model: str | None = None, parent: str | None = None
) -> Response:
    svc = _caller_service(request)
    if svc is None:
        return to_signin(request)
    return _new_form(request, svc, kind=kind, model=model, values={"parent_job_id": parent or ""})


@router.post("/new")
async def submit(request: Request) -> Response:
    svc = _caller_service(request)
    token = session_token(request)
    if svc is None or token is None:
        return to_signin(request)
    form = await request.form()
    values = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != FIELD}
    kind, model = values.get("kind", "train"), values.get("model")
    try:
        check_signed_in_post(request, form, token)
        job = forms.submit(svc, form)
    except CsrfRefused as exc:
        return _refused(request, exc)
    except InvalidInput as exc:
        field = forms.field_of(exc.field)
        return _new_form(
            request,
            svc,
            kind=kind,
            model=model,
            values=values,
            errors={field: exc.message},
            status=422,
            error=f"Not submitted: {field}: {exc.message}",
        )
    except JobNotFound as exc:
        return _new_form(
            request,
            svc,
            kind=kind,
            model=model,
            values=values,
            errors={"parent_job_id": str(exc)},
            status=422,
            error=f"Not submitted: {exc}",
        )
    except (Throttled, ServiceUnavailable) as exc:
        status = 429 if isinstance(exc, Throttled) else 503
        return _new_form(
            request, svc, kind=kind, model=model, values=values, error=f"Not submitted: {exc}", status=status
        )
    return RedirectResponse(f"/jobs/{quote(job.id, safe='')}", status_code=303)
