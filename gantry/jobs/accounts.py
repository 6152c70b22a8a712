"""API accounts: bearer tokens, each naming an owner (docs/api.md, "Accounts").

A token is `gty_` + 43 url-safe characters (256 random bits), printed once when it is created. Only its
sha256 is stored: with that much entropy a plain hash cannot be reversed or guessed, and a lookup is one
indexed equality (no per-request key stretching, no timing side channel on the secret itself). The
token's id (the first characters of its hash) is what `token list` shows and `token revoke` takes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gantry.jobs.errors import InvalidInput
from gantry.jobs.store import ApiToken, aware, utcnow

PREFIX = "gty_"
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Caller:
    """Who an API request acts for: an owner sees and acts on its own jobs; an admin on all."""

    owner: str
    admin: bool = False
    expires_at: datetime | None = field(default=None, compare=False)  # the token's expiry (UTC)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_expiry(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """`90d`, `12h`, `30m`, `2w`, `3600s` from now; None or `never`: no expiry."""
    if text is None or text == "never":
        return None
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise InvalidInput("expires", f"{text!r} is not a duration such as 90d, 12h, 30m, 2w or never")
    return (now or utcnow()) + timedelta(seconds=int(match.group(1)) * _UNIT[match.group(2)])


def create_token(
    session: Session, *, owner: str, admin: bool = False, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Record a new token for `owner`; returns the row and the token (shown once, never stored)."""
    if not _OWNER.fullmatch(owner):
        raise InvalidInput(
            "owner", f"{owner!r}: 1-64 letters, digits and _.@- (starting with a letter or digit)"
        )
    token = PREFIX + secrets.token_urlsafe(32)
    hashed = digest(token)
    row = ApiToken(
        id=hashed[:12],
        owner=owner,
        admin=admin,
        sha256=hashed,
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row, token


def authenticate(session: Session, token: str, *, now: datetime | None = None) -> Caller | None:
    """The caller `token` stands for; None when it is unknown, expired or revoked."""
    if not token.startswith(PREFIX):
        return None
    row = session.scalars(select(ApiToken).where(ApiToken.sha256 == digest(token))).first()
    now = now or utcnow()
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and aware(row.expires_at) <= now:
        return None
    return Caller(owner=row.owner, admin=row.admin, expires_at=aware(row.expires_at))


def list_tokens(session: Session, *, owner: str | None = None) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.created_at)
    if owner is not None:
        query = query.where(ApiToken.owner == owner)
    return list(session.scalars(query))


def revoke_token(session: Session, token_id: str) -> ApiToken:
    """Revoke the token whose id is `token_id` (as `token list` shows it); at once, for every request
    after this one."""
    row = session.get(ApiToken, token_id)
    if row is None:
        known = ", ".join(t.id for t in list_tokens(session)) or "none"
        raise InvalidInput("token", f"no token with id {token_id!r} (known: {known})")
    if row.revoked_at is None:
        session.execute(update(ApiToken).where(ApiToken.id == token_id).values(revoked_at=utcnow()))
        session.refresh(row)
    return row
