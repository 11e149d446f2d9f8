"""Console sessions and CSRF tokens, signed with a key derived from the API-key secret.

The cookie (signed with itsdangerous) holds the key's identity (a stored key's id and name, or the bootstrap admin
with a fingerprint of the admin key), an expiry and a random session id, never the key itself; every request
re-reads the key, so revoking it or changing the admin key ends the session at once. CSRF tokens are HMACs of the
session id (or, for the login form, of a pre-session id kept in its own short-lived cookie), checked on every POST.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.orm import Session

from service.registry.keys import BOOTSTRAP_ADMIN, find_active_key, hash_key
from service.settings import Settings
from service.store.orm import ApiKey

SESSION_COOKIE = "capprof_console"
LOGIN_COOKIE = "capprof_console_login"  # the login form's pre-session id (CSRF before there is a session)
COOKIE_PATH = "/console"
LOGIN_FORM_SECONDS = 3600


def _signing_key(settings: Settings) -> bytes:
    """A key of its own for the console, derived from the API-key secret (one secret to rotate)."""
    return hmac.new(settings.resolved_key_secret, b"capprof console session v1", hashlib.sha256).digest()


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(_signing_key(settings), salt="capprof console")


def sign(settings: Settings, payload: dict[str, object]) -> str:
    return _serializer(settings).dumps(payload)


def unsign(settings: Settings, token: str | None) -> dict[str, object] | None:
    """The payload of a token this server signed and that has not expired; None for anything else."""
    if not token:
        return None
    try:
        payload = _serializer(settings).loads(token)
    except BadSignature:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int | float) or payload["exp"] < time.time():
        return None
    return payload


@dataclass(frozen=True)
class ConsoleUser:
    """The admin key a console session stands for, and the session's id (what its CSRF token is made from)."""

    name: str
    key_id: int | None  # None for the bootstrap admin key from settings
    session_id: str


def admin_fingerprint(settings: Settings) -> str:
    """Changes when the settings admin key changes, so sessions opened with the old one stop working."""
    return hash_key(settings.resolved_key_secret, settings.admin_key.get_secret_value())[:16]


def login_payload(settings: Settings, key: str, session: Session) -> dict[str, object] | str:
    """The session payload for an admin key, or why the key is refused ("invalid" or "scope")."""
    exp = int(time.time() + settings.console_session_hours * 3600)
    sid = secrets.token_urlsafe(16)
    if key and secrets.compare_digest(key.encode(), settings.admin_key.get_secret_value().encode()):
        return {"k": None, "n": BOOTSTRAP_ADMIN, "f": admin_fingerprint(settings), "exp": exp, "sid": sid}
    row = find_active_key(session, settings.resolved_key_secret, key)
    if row is None:
        return "invalid"
    if row.scopes != "admin":
        return "scope"
    return {"k": row.id, "n": row.name, "exp": exp, "sid": sid}


def current_user(settings: Settings, cookie: str | None, session: Session) -> ConsoleUser | None:
    """The session's key if the cookie is genuine, unexpired, and the key still exists, is live and admin-scoped."""
    payload = unsign(settings, cookie)
    if payload is None or not isinstance(payload.get("sid"), str) or not isinstance(payload.get("n"), str):
        return None
    key_id = payload.get("k")
    if key_id is None:
        if payload["n"] != BOOTSTRAP_ADMIN or payload.get("f") != admin_fingerprint(settings):
            return None
        return ConsoleUser(BOOTSTRAP_ADMIN, None, str(payload["sid"]))
    if not isinstance(key_id, int):
        return None
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None or row.scopes != "admin" or row.name != payload["n"]:
        return None
    return ConsoleUser(row.name, row.id, str(payload["sid"]))


def csrf_token(settings: Settings, session_id: str) -> str:
    return hmac.new(_signing_key(settings), b"csrf:" + session_id.encode(), hashlib.sha256).hexdigest()


def csrf_ok(settings: Settings, session_id: str | None, offered: str | None) -> bool:
    if not session_id or not offered:
        return False
    return hmac.compare_digest(csrf_token(settings, session_id), offered)


def login_form_id(settings: Settings, cookie: str | None) -> str | None:
    """The pre-session id of the login form from its signed cookie, if genuine and unexpired."""
    payload = unsign(settings, cookie)
    if payload is None or payload.get("login") is not True or not isinstance(payload.get("sid"), str):
        return None
    return str(payload["sid"])


def new_login_form(settings: Settings) -> tuple[str, str]:
    """(cookie value, pre-session id) for a fresh login form."""
    sid = secrets.token_urlsafe(16)
    return sign(settings, {"login": True, "sid": sid, "exp": int(time.time() + LOGIN_FORM_SECONDS)}), sid
