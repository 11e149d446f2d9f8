"""API keys: create (the secret is shown once), list, revoke, and look one up by its HMAC.

A key is 256 random bits; only HMAC-SHA256(server secret, key) is stored, so neither a database dump nor the stored
hash can be used to authenticate, and the secret itself never enters the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import ConflictError, NotFoundError
from service.store.orm import ApiKey

Scope = Literal["route", "read", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
SCOPE_RANK: dict[str, int] = {scope: rank for rank, scope in enumerate(SCOPES)}
KEY_PREFIX = "cpk_"
BOOTSTRAP_ADMIN = "admin"  # the caller name of the settings admin key; no stored key may take it
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def hash_key(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    row: ApiKey
    key: str  # the only time the plain key exists outside the caller's hands


def create_key(
    session: Session,
    secret: bytes,
    name: str,
    scope: str,
    default_lambda: float | None = None,
    monthly_budget_usd: float | None = None,
) -> CreatedKey:
    if not KEY_NAME.match(name):
        raise ValueError("name: letters, digits, '.', '_' or '-', starting with a letter or digit, at most 200")
    if name == BOOTSTRAP_ADMIN:
        raise ConflictError(f"name: {BOOTSTRAP_ADMIN!r} is reserved for the settings admin key")
    if scope not in SCOPE_RANK:
        raise ValueError(f"scope: one of {', '.join(SCOPES)}")
    if default_lambda is not None and not 0 <= default_lambda <= 1000:
        raise ValueError("lambda: between 0 and 1000")
    if monthly_budget_usd is not None and monthly_budget_usd < 0:
        raise ValueError("monthly_budget_usd: must be >= 0")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ConflictError(f"name: a key named {name!r} already exists (revoked keys keep their name)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name,
        key_hash=hash_key(secret, key),
        scopes=scope,
        default_lambda=default_lambda,
        monthly_budget_usd=monthly_budget_usd,
    )
    session.add(row)
    session.flush()
    return CreatedKey(row, key)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.name)))


def revoke_key(session: Session, name: str) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if row is None:
        raise NotFoundError(f"name: no key named {name!r}")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.flush()
    return row


def find_active_key(session: Session, secret: bytes, key: str) -> ApiKey | None:
    """The live key whose hash matches; None for unknown, revoked or empty keys."""
    if not key:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret, key)))
    if row is None or row.revoked_at is not None:
        return None
    return row
