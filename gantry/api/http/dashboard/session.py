"""The dashboard's session cookie and its CSRF defence (docs/api.md, "Dashboard").

Session: signing in validates the pasted API token (Service.authenticate) and keeps it in the cookie
`gantry_token`: HttpOnly (page scripts never read it), SameSite=Strict (no other site's page or link
sends it), Secure when the request came over https, Path=/. Every page checks it again on every
request, so a revoked or expired token is signed out at once. GET routes of /v1 also take it
(gantry.api.http.auth.request_token), which is how the pages' scripts, EventSource and <img> read.

CSRF: SameSite=Strict alone already keeps other sites' forms from carrying the cookie; two more
checks hold each form post (sign-in, submit, cancel, sign-out) even where a browser ignores SameSite:
1. Origin: a post whose Origin (or, without one, Referer) names another host than the request's is
   403. A post with neither passes on to check 2 (some proxies strip both).
2. A CSRF token in a hidden field, 403 when missing or wrong:
   - signed in, it is HMAC-SHA256 keyed by the session token over a fixed label. Only a page that
     holds the session cookie can compute it, it reveals nothing of the token, and every API
     process derives the same one without a shared server secret (several uvicorn workers agree).
   - the sign-in form (no session yet; "login CSRF" would sign a victim in as the attacker) uses a
     double-submit cookie: a random value in the HttpOnly, SameSite=Strict cookie `gantry_csrf`,
     set with the form, must equal the form's hidden field.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from gantry.api.http.auth import COOKIE

SIGNIN_CSRF_COOKIE = "gantry_csrf"
FIELD = "csrf"
SESSION_SECONDS = 30 * 86400  # the browser forgets the cookie after this; the token may end sooner
_LABEL = b"gantry dashboard csrf v1"


class CsrfRefused(Exception):
    """A form post that failed the Origin or the CSRF-token check (answered 403)."""


def session_token(request: Request) -> str | None:
    return request.cookies.get(COOKIE) or None


def csrf_for(token: str) -> str:
    """The CSRF token of the session whose API token is `token`."""
    return hmac.new(token.encode(), _LABEL, hashlib.sha256).hexdigest()


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def sign_in(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/signin")


def sign_out(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request))


def signin_csrf(request: Request) -> str:
    """The sign-in form's double-submit value: the cookie's if it has one, else a new one."""
    return request.cookies.get(SIGNIN_CSRF_COOKIE) or secrets.token_urlsafe(32)


def keep_signin_csrf(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        SIGNIN_CSRF_COOKIE,
        value,
        path="/signin",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def check_origin(request: Request) -> None:
    """A form post must come from a page of this host (see the module's docstring)."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if claimed is None:
        return
    host = request.headers.get("host", "")
    if claimed == "null" or urlsplit(claimed).netloc.lower() != host.lower():
        raise CsrfRefused("the form was posted from another site")


def check_signed_in_post(request: Request, form: FormData, token: str) -> None:
    check_origin(request)
    sent = form.get(FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent, csrf_for(token)):
        raise CsrfRefused("the form's CSRF token is missing or wrong; reload the page and try again")


def check_signin_post(request: Request, form: FormData) -> None:
    check_origin(request)
    sent, cookie = form.get(FIELD), request.cookies.get(SIGNIN_CSRF_COOKIE)
    if not isinstance(sent, str) or not cookie or not hmac.compare_digest(sent, cookie):
        raise CsrfRefused("the form's CSRF token is missing or wrong; reload the page and try again")


def local_path(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never `//host` or a URL)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def to_signin(request: Request) -> RedirectResponse:
    """A page without a valid session: to /signin, coming back here afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"/signin?next={_quote(here)}", status_code=303)
    if session_token(request):  # a cookie that no longer signs in (revoked, expired): drop it
        sign_out(response, request)
    return response


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")
