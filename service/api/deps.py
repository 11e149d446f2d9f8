"""FastAPI dependencies as Annotated aliases: the runtime, a database session, the admin check (see auth.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.api.auth import AdminKeyDep as AdminKeyDep
from service.api.auth import Caller as Caller
from service.api.auth import ReadKeyDep as ReadKeyDep
from service.api.auth import RequireAdmin
from service.api.auth import RequireRead as RequireRead
from service.api.auth import RequireRoute as RequireRoute
from service.api.auth import RouteKeyDep as RouteKeyDep
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


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SessionDep = Annotated[Session, Depends(get_session)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]
DecisionLogDep = Annotated[DecisionLog, Depends(get_decision_log)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
# Admin scope for `dependencies=[AdminDep]` (the Caller itself: service.api.auth.AdminKeyDep).
AdminDep = RequireAdmin
UpstreamsDep = Annotated[UpstreamPool, Depends(get_upstreams)]
