"""Liveness, readiness (both stores, the embedder, the routing state) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service.api.deps import DecisionLogDep, MetricsDep, RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(runtime: RuntimeDep, log: DecisionLogDep) -> JSONResponse:
    checks: dict[str, str] = {}
    warnings: list[str] = []
    try:
        with runtime.sessions() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        runtime.store.ping()
        checks["qdrant"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["qdrant"] = f"unavailable: {type(exc).__name__}"
    checks["router"] = "ok" if runtime.router.loaded else "not loaded"
    if runtime.router.loaded and len(runtime.router.state.models) == 0:
        warnings.append("no active model registered: routing answers 503 until data is imported")
    if runtime.router.loaded and runtime.router.state.stage2 is None:
        warnings.append("no re-ranker checkpoint active: routing uses stage 1 only (capprof reranker train/activate)")
    if log.last_error:
        warnings.append(f"decision log retrying ({log.pending} pending): {log.last_error}")
    ready = all(v == "ok" for v in checks.values())
    stage2 = runtime.router.state.stage2 if runtime.router.loaded else None
    return JSONResponse(
        {
            "status": "ready" if ready else "not ready",
            "checks": checks,
            "warnings": warnings,
            "reranker_version": stage2.version if stage2 is not None else None,
            "generation": runtime.router.generation,  # the routing-state generation this replica serves
            "refreshes": runtime.refreshes,
            "refresh_seconds": round(runtime.refresh_seconds, 4),
        },
        status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE,
    )


@router.get("/metrics")
def metrics(metrics: MetricsDep, log: DecisionLogDep) -> Response:
    metrics.decisions_pending.set(log.pending)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
