"""Who is calling: API keys with scopes (route < read < admin), as Annotated FastAPI dependencies.

Keys arrive as `Authorization: Bearer KEY` (or `X-Admin-Key: KEY`, kept for the bootstrap admin). The admin key from
settings is the bootstrap admin, caller name "admin". Without any key a request is anonymous; that is allowed for
route and read endpoints only while keys are not required (CAPPROF_REQUIRE_KEYS, false in development by default).
Every lookup reads the database, so a revoked key fails on its next request.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.registry.keys import BOOTSTRAP_ADMIN, SCOPE_RANK, Scope, find_active_key
from service.runtime import Runtime

CALLER_LABEL_MAX = 200

# The two ways to present a key, declared as OpenAPI security schemes; the headers themselves are read below, so
# an empty or non-Bearer value is refused rather than ignored.
ADMIN_KEY_HEADER = APIKeyHeader(
    name="X-Admin-Key", scheme_name="AdminKey", auto_error=False, description="the admin key (CAPPROF_ADMIN_KEY)"
)
BEARER = HTTPBearer(scheme_name="Bearer", auto_error=False, description="Authorization: Bearer <API key>")


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


@dataclass(frozen=True)
class Caller:
    """The authenticated key (or an anonymous caller when keys are not required) and its limits."""

    name: str | None  # the key's name; None when anonymous
    scope: Scope | None
    default_lambda: float | None = None
    monthly_budget_usd: float | None = None
    # The self-declared X-Caller header: a label under the key, never an identity. Decisions log it as caller_label
    # and only `name` as caller, so an anonymous request labelled with a key's name never counts as that key's.
    label: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.name is not None


def _refuse(request: Request, code: int, reason: str, detail: str) -> HTTPException:
    request.app.state.metrics.auth_failures.labels(reason).inc()
    headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
    return HTTPException(code, detail=detail, headers=headers)


def _offered_key(x_admin_key: str | None, authorization: str | None) -> str | None:
    """The key offered: X-Admin-Key when it has a value, else a Bearer token ("" for another scheme or an empty
    token, which never authenticates). An empty X-Admin-Key counts as absent, never as a key."""
    if x_admin_key:
        return x_admin_key.strip()
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _caller(request: Request, runtime: Runtime, key: str, label: str | None) -> Caller | None:
    if not key:
        return None
    admin = runtime.settings.admin_key.get_secret_value()
    if secrets.compare_digest(key.encode(), admin.encode()):
        return Caller(BOOTSTRAP_ADMIN, "admin", label=label)
    with runtime.sessions() as session:
        row = find_active_key(session, runtime.settings.resolved_key_secret, key)
        if row is None:
            return None
        return Caller(row.name, row.scopes, row.default_lambda, row.monthly_budget_usd, label)  # type: ignore[arg-type]


def require_scope(needed: Scope) -> Callable[..., Caller]:
    """A dependency that admits keys of scope `needed` or higher (and anonymous callers where allowed)."""

    def dependency(
        request: Request,
        runtime: Annotated[Runtime, Depends(_runtime)],
        _admin_key: Annotated[str | None, Security(ADMIN_KEY_HEADER)] = None,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
        x_caller: Annotated[str | None, Header()] = None,
    ) -> Caller:
        label = x_caller[:CALLER_LABEL_MAX] if x_caller else None
        offered = _offered_key(request.headers.get("X-Admin-Key"), request.headers.get("Authorization"))
        if offered is None:
            if needed == "admin" or runtime.settings.keys_required:
                what = "admin key" if needed == "admin" else "API key"
                raise _refuse(request, 401, "missing", f"{what} required (Authorization: Bearer KEY)")
            caller = Caller(None, None, label=label)
        else:
            found = _caller(request, runtime, offered, label)
            if found is None:
                raise _refuse(request, 401, "invalid", "invalid or revoked API key")
            caller = found
            request.state.caller = caller.name
            if SCOPE_RANK[caller.scope or "route"] < SCOPE_RANK[needed]:
                raise _refuse(
                    request, 403, "scope", f"key {caller.name!r} has scope {caller.scope!r}; this needs {needed!r}"
                )
        request.state.caller = caller.name
        return caller

    dependency.__name__ = f"require_{needed}_scope"
    return dependency


route_caller = require_scope("route")
read_caller = require_scope("read")
admin_caller = require_scope("admin")

RouteKeyDep = Annotated[Caller, Depends(route_caller)]
ReadKeyDep = Annotated[Caller, Depends(read_caller)]
AdminKeyDep = Annotated[Caller, Depends(admin_caller)]
# For `dependencies=[...]` on endpoints that do not need the Caller itself.
RequireRoute = Depends(route_caller)
RequireRead = Depends(read_caller)
RequireAdmin = Depends(admin_caller)
