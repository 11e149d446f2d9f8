"""FastAPI dependencies as Annotated aliases: the runtime, a database session, the admin check."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from sqlalchemy.orm import Session

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


def gateway_auth(authorization: Annotated[str | None, Header()] = None) -> None:
    """The gateway's one auth dependency. /v1/route is open on this branch, so the caller's
    `Authorization: Bearer KEY` (which the OpenAI client always sends) is accepted as is; swap this for the
    route-scope key check when per-client keys exist. The caller's key is never forwarded upstream."""


def require_admin(
    runtime: Annotated[Runtime, Depends(get_runtime)],
    x_admin_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """Admin surfaces take the admin key as `X-Admin-Key: KEY` or `Authorization: Bearer KEY`."""
    offered = x_admin_key
    if offered is None and authorization and authorization.lower().startswith("bearer "):
        offered = authorization[7:]
    expected = runtime.settings.admin_key.get_secret_value()
    if offered is None or not secrets.compare_digest(offered.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="admin key required (X-Admin-Key header or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SessionDep = Annotated[Session, Depends(get_session)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]
DecisionLogDep = Annotated[DecisionLog, Depends(get_decision_log)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AdminDep = Depends(require_admin)
UpstreamsDep = Annotated[UpstreamPool, Depends(get_upstreams)]
GatewayAuthDep = Depends(gateway_auth)
