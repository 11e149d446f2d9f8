"""The FastAPI application factory: lifespan, routers and error handling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api import (
    aptitude,
    dimensions,
    feedback,
    health,
    keys,
    models,
    openai_gateway,
    reports,
    reranker,
    routing,
)
from service.api.failures import data_error, database_error, integrity_error
from service.api.limits import BodyLimit, RateLimit
from service.api.request_id import REQUEST_ID, RequestIdMiddleware
from service.api.route_metrics import RouteErrorMetrics
from service.api.schemas import pattern_problem
from service.console.routes import router as console_router
from service.gateway.upstream import UpstreamPool
from service.metrics import Metrics
from service.registry.catalog import ensure_seed_dimensions
from service.registry.reindex import reconcile_after_crash
from service.registry.retention import purge_expired
from service.request_log import RequestLogMiddleware
from service.routing.decision_log import DecisionLog
from service.routing.microbatch import MicroBatcher
from service.routing.reloader import CoalescedReload
from service.runtime import Runtime
from service.settings import Settings

logger = logging.getLogger(__name__)


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in (loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)]
    name = ""
    for part in parts:
        name += f"[{part}]" if part.isdigit() else (f".{part}" if name else part)
    return name or "body"


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": "body" if e["type"] == "json_invalid" else _field(tuple(e["loc"])),
            "problem": pattern_problem(e.get("input"), (e.get("ctx") or {}).get("pattern", "")) or e["msg"],
        }
        for e in exc.errors()
    ]
    message = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
    return JSONResponse({"detail": message, "errors": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _http_error(request: Request, exc: Exception) -> Response:
    """A 422 raised in code ("field: problem") gets the same body as a schema 422: detail plus errors."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == status.HTTP_400_BAD_REQUEST and exc.detail == "There was an error parsing the body":
        # FastAPI's answer to a body that is not UTF-8: invalid input like any other, so the same 422
        exc = HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="body: is not valid UTF-8 JSON")
    if exc.status_code != status.HTTP_422_UNPROCESSABLE_CONTENT or not isinstance(exc.detail, str):
        return await http_exception_handler(request, exc)
    field, _, problem = exc.detail.partition(": ")
    errors = [{"field": field, "problem": problem}] if problem else [{"field": "body", "problem": exc.detail}]
    return JSONResponse({"detail": exc.detail, "errors": errors}, status_code=exc.status_code, headers=exc.headers)


def _unavailable(store: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """A 503 that says which store is down and that the request changed nothing (its transaction rolled back)."""

    async def handler(_: Request, exc: Exception) -> JSONResponse:
        logger.error("%s unavailable: %s, request id %s", store, type(exc).__name__, REQUEST_ID.get())
        return JSONResponse(
            {"detail": f"{store} unavailable; nothing was changed, retry later"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    return handler


async def _follow_generation(runtime: Runtime) -> None:
    """One watcher per process: picks up writes made through other replicas or the CLI within the interval.

    The refresh runs in a worker thread and swaps the new state in whole, so routing never waits for it; all
    writes since the last look are applied in one refresh (coalesced), incrementally where they allow it.
    """
    while True:
        await asyncio.sleep(runtime.settings.refresh_interval_s)
        try:
            if runtime.router.loaded:
                await asyncio.to_thread(runtime.refresh_router)
            else:  # start-up found the stores down: keep trying
                await asyncio.to_thread(runtime.reload_router)
        except Exception as exc:  # noqa: BLE001 - a store blip must not kill the watcher
            logger.warning("routing-state refresh failed: %s", type(exc).__name__)


def _purge(runtime: Runtime, metrics: Metrics) -> None:
    with runtime.transaction() as session:
        result = purge_expired(session, runtime.settings.retention_days)
    metrics.decisions_purged.inc(result.queries)
    if result.queries or result.dimensions:
        logger.info("retention: removed query data of %d decisions older than %s", result.queries, result.cutoff)


async def _purge_periodically(runtime: Runtime, metrics: Metrics) -> None:
    """Removes decisions' query vectors, texts and dimension weights once past the retention window."""
    interval = runtime.settings.retention_purge_interval_s
    while interval is not None:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(_purge, runtime, metrics)
        except Exception as exc:  # noqa: BLE001 - a store blip must not kill the purger
            logger.warning("retention purge failed: %s", type(exc).__name__)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app; pass a prepared Runtime to share an embedder or a database connection (tests)."""
    runtime = runtime or Runtime(settings or Settings())
    metrics = Metrics()
    decision_log = DecisionLog(
        runtime.sessions, runtime.settings.decision_flush_interval_s, on_drop=metrics.decisions_dropped.inc
    )
    batcher = MicroBatcher(
        runtime.embedder.embed_uncached,
        runtime.settings.microbatch_window_ms,
        runtime.settings.microbatch_max,
        runtime.settings.embed_max_tokens,
        runtime.settings.embed_bulk_max_tokens,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.embedder.embed_uncached(["warm-up query"])  # loads weights and kernels before traffic
        try:
            with runtime.transaction() as session:
                ensure_seed_dimensions(session, runtime.store, runtime.embedder)
            if not runtime.settings.qdrant_url:  # an embedded Qdrant left behind by a crash is reconciled
                with runtime.sessions() as session:
                    fixed = reconcile_after_crash(session, runtime.store, runtime.embedder)
                if any(fixed.values()):
                    logger.warning("vector store reconciled with the database: %s", fixed)
            runtime.reload_router()
            _purge(runtime, metrics)
        except (SQLAlchemyError, ResponseHandlingException, UnexpectedResponse) as exc:
            logger.error(
                "stores unavailable or database not migrated (capprof db upgrade) at start-up; routing not ready: %s",
                type(exc).__name__,
            )
        await batcher.start()
        app.state.upstreams = UpstreamPool(runtime.settings)  # made inside the serving event loop
        decision_log.start()
        watcher = asyncio.create_task(_follow_generation(runtime))
        purger = asyncio.create_task(_purge_periodically(runtime, metrics))
        try:
            yield
        finally:
            watcher.cancel()
            purger.cancel()
            await batcher.stop()
            await app.state.upstreams.aclose()
            decision_log.stop()
            runtime.close()

    app = FastAPIOffline(  # Swagger UI and ReDoc served from the package: /docs works offline
        title="capprof",
        version="0.1.0",
        summary="Routes each query to the LLM that answers it best for the money.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.state.decision_log = decision_log
    app.state.batcher = batcher

    def refresh() -> None:
        runtime.refresh_router()  # incremental: feedback changes one model's records

    app.state.reloader = CoalescedReload(refresh)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Only a lost database is a 503; a value it refuses is the client's 422 (409 for a duplicate).
    for lost in (OperationalError, InterfaceError):
        app.add_exception_handler(lost, _unavailable("database"))
    app.add_exception_handler(DBAPIError, database_error(_unavailable("database")))
    app.add_exception_handler(IntegrityError, integrity_error)
    app.add_exception_handler(DataError, data_error)
    app.add_middleware(RouteErrorMetrics, metrics=metrics)
    for qdrant_error in (ResponseHandlingException, UnexpectedResponse):
        app.add_exception_handler(qdrant_error, _unavailable("vector store (Qdrant)"))
    for module in (health, models, dimensions, routing, aptitude, reranker, feedback, keys, reports, openai_gateway):
        app.include_router(module.router)
    app.include_router(console_router)
    # Limits: the body cap, then the per-caller rate limit; outside them the request log, and outermost the
    # request id, so every response (refusals included) carries its id and every request is logged.
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.max_body_bytes)
    app.add_middleware(RateLimit, rate=runtime.settings.rate_limit_per_s, burst=runtime.settings.rate_limit_burst)
    app.add_middleware(RequestLogMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
