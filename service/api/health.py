"""Liveness, readiness (both stores, the embedder, the routing state) and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text

from service.api.deps import DecisionLogDep, MetricsDep, RuntimeDep, is_admin, offered_key
from service.runtime import Runtime

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.head("/healthz", include_in_schema=False)
def healthz_head() -> Response:
    """Load balancers that probe with HEAD."""
    return Response(status_code=200)


Readiness = Literal["ready", "degraded", "not ready"]


class ReadinessOut(BaseModel):
    status: Readiness = Field(
        description="ready: all well; degraded: routing answers, something else is down; not ready: routing cannot"
    )
    checks: dict[str, str] | None = Field(default=None, description="each component's state (admin key only)")
    warnings: list[str] | None = Field(default=None, description="admin key only")
    reranker_version: int | None = Field(description="the active Model-SAT checkpoint, if any")


def _probe(check: Callable[[], object]) -> str:
    """'ok', or why not as an exception class name: a driver's message can name hosts and ports."""
    try:
        check()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is reported, none is raised
        return f"unavailable ({type(exc).__name__})"


def _select_one(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        session.execute(text("SELECT 1"))


@router.get(
    "/readyz",
    response_model=ReadinessOut,
    responses={503: {"model": ReadinessOut, "description": "routing cannot answer (state not loaded)"}},
)
def readyz(request: Request, runtime: RuntimeDep, log: DecisionLogDep) -> JSONResponse:
    """Ready (200) while routing can answer from memory, even with the database down (decisions are queued):
    a load balancer must not pull every replica for a database blip. Send the admin key to see which component
    is degraded and why."""
    checks = {"database": _probe(lambda: _select_one(runtime)), "qdrant": _probe(runtime.store.ping)}
    checks["router"] = "ok" if runtime.router.loaded else "not loaded"
    checks["decision_log"] = "ok"
    if log.last_error:
        checks["decision_log"] = f"retrying ({log.pending} pending)" if log.pending else "dropped unwritable decisions"
    can_route = runtime.router.loaded and (runtime.settings.search_backend == "snapshot" or checks["qdrant"] == "ok")
    state: Readiness = "not ready"
    if can_route:
        state = "ready" if all(v == "ok" for v in checks.values()) else "degraded"
    stage2 = runtime.router.state.stage2 if runtime.router.loaded else None
    body: dict[str, object] = {
        "status": state,
        "reranker_version": stage2.version if stage2 is not None else None,
        "generation": runtime.router.generation,  # the routing-state generation this replica serves
    }
    if is_admin(runtime, offered_key(request)):
        warnings: list[str] = []
        if runtime.router.loaded and len(runtime.router.state.models) == 0:
            warnings.append("no active model registered: routing answers 503 until data is imported")
        if runtime.router.loaded and runtime.router.state.stage2 is None:
            warnings.append(
                "no re-ranker checkpoint active: routing uses stage 1 only (capprof reranker train/activate)"
            )
        if log.last_error:
            warnings.append(f"decision log retrying ({log.pending} pending): {log.last_error.split(':')[0]}")
        body.update(
            checks=checks,
            warnings=warnings,
            refreshes=runtime.refreshes,
            refresh_seconds=round(runtime.refresh_seconds, 4),
        )
    return JSONResponse(
        body,
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE if state == "not ready" else status.HTTP_200_OK,
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
def metrics(metrics: MetricsDep, log: DecisionLogDep) -> Response:
    metrics.decisions_pending.set(log.pending)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
