"""FastAPI dependencies as Annotated aliases: the runtime, a database session, the admin check (see auth.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from pydantic import BeforeValidator
from sqlalchemy.orm import Session

from service.api.auth import AdminKeyDep as AdminKeyDep
from service.api.auth import Caller as Caller
from service.api.auth import ReadKeyDep as ReadKeyDep
from service.api.auth import RequireAdmin
from service.api.auth import RequireRead as RequireRead
from service.api.auth import RequireRoute as RequireRoute
from service.api.auth import RouteKeyDep as RouteKeyDep
from service.api.schemas import LABEL_SCHEMA_PATTERN, check_label
from service.gateway.upstream import UpstreamPool
from service.metrics import Metrics
from service.routing.decision_log import DecisionLog
from service.routing.microbatch import MicroBatcher
from service.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_session(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Iterator[Session]:
    with runtime.sessions() as session:
        yield session


def get_batcher(request: Request) -> MicroBatcher:
    return request.app.state.batcher


def get_decision_log(request: Request) -> DecisionLog:
    return request.app.state.decision_log


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_upstreams(request: Request) -> UpstreamPool:
    return request.app.state.upstreams


def is_admin(runtime: Runtime, offered: str | None) -> bool:
    """An empty key never authenticates, whatever is configured."""
    expected = runtime.settings.admin_key.get_secret_value()
    if not offered or not expected:
        return False
    return secrets.compare_digest(offered.encode(), expected.encode())


def offered_key(request: Request) -> str | None:
    """The key a request offers, read straight from its headers (for endpoints where a key is optional)."""
    x_admin_key = request.headers.get("X-Admin-Key")
    authorization = request.headers.get("Authorization", "")
    if x_admin_key:
        return x_admin_key
    scheme, _, credentials = authorization.partition(" ")
    return (credentials.strip() or None) if scheme.lower() == "bearer" else None


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SessionDep = Annotated[Session, Depends(get_session)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]
DecisionLogDep = Annotated[DecisionLog, Depends(get_decision_log)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
# Admin scope for `dependencies=[AdminDep]` (the Caller itself: service.api.auth.AdminKeyDep).
AdminDep = RequireAdmin
UpstreamsDep = Annotated[UpstreamPool, Depends(get_upstreams)]
# A model name in a path: a NUL or another control character is a 422 before any store is asked.
ModelPathName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        json_schema_extra={"pattern": LABEL_SCHEMA_PATTERN},
        description="the model's name",
    ),
    BeforeValidator(check_label),
]
