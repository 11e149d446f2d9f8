"""The FastAPI application factory: lifespan, routers and error handling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from service.api import aptitude, dimensions, health, models, reranker, routing
from service.api.limits import BodyLimit, RateLimit
from service.metrics import Metrics
from service.registry.catalog import ensure_capabilities
from service.registry.reindex import reconcile
from service.routing.decision_log import DecisionLog
from service.routing.microbatch import MicroBatcher
from service.runtime import Runtime
from service.settings import Settings
from service.store.readers import active_checkpoint

logger = logging.getLogger(__name__)


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in (loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)]
    name = ""
    for part in parts:
        name += f"[{part}]" if part.isdigit() else (f".{part}" if name else part)
    return name or "body"


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": _field(tuple(e["loc"])), "problem": e["msg"]} for e in exc.errors()]
    message = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
    return JSONResponse({"detail": message, "errors": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def _unavailable(store: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """A 503 that says which store is down and that the request changed nothing (its transaction rolled back)."""

    async def handler(_: Request, exc: Exception) -> JSONResponse:
        logger.error("%s unavailable: %s", store, type(exc).__name__)
        return JSONResponse(
            {"detail": f"{store} unavailable; nothing was changed, retry later"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    return handler


def _active_version(runtime: Runtime) -> int | None:
    with runtime.sessions() as session:
        checkpoint = active_checkpoint(session)
        return checkpoint.version if checkpoint is not None else None


async def _follow_active_checkpoint(runtime: Runtime) -> None:
    """Picks up a checkpoint activated elsewhere (the CLI, another replica) without a restart."""
    while True:
        await asyncio.sleep(runtime.settings.reranker_poll_s)
        try:
            wanted = await asyncio.to_thread(_active_version, runtime)
            loaded = (
                runtime.router.state.stage2.version if runtime.router.loaded and runtime.router.state.stage2 else None
            )
            if wanted != loaded:
                logger.info("re-ranker checkpoint changed (%s -> %s): reloading", loaded, wanted)
                await asyncio.to_thread(runtime.reload_router)
        except Exception as exc:  # noqa: BLE001 - a store blip must not kill the watcher
            logger.warning("re-ranker watch failed: %s", type(exc).__name__)


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
                ensure_capabilities(session, runtime.store, runtime.embedder)
            if not runtime.settings.qdrant_url:  # issue 10: an embedded Qdrant left behind by a crash is reconciled
                with runtime.sessions() as session:
                    fixed = reconcile(session, runtime.store, runtime.embedder)
                if any(fixed.values()):
                    logger.warning("vector store reconciled with the database: %s", fixed)
            runtime.reload_router()
        except (SQLAlchemyError, ResponseHandlingException, UnexpectedResponse) as exc:
            logger.error(
                "stores unavailable or database not migrated (capprof db upgrade) at start-up; routing not ready: %s",
                type(exc).__name__,
            )
        await batcher.start()
        decision_log.start()
        watcher = asyncio.create_task(_follow_active_checkpoint(runtime))
        try:
            yield
        finally:
            watcher.cancel()
            await batcher.stop()
            decision_log.stop()
            runtime.close()

    app = FastAPI(
        title="capprof",
        version="0.1.0",
        summary="Routes each query to the LLM that answers it best for the money.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.state.decision_log = decision_log
    app.state.batcher = batcher
    app.add_exception_handler(RequestValidationError, _validation_error)
    for database_error in (OperationalError, DBAPIError):
        app.add_exception_handler(database_error, _unavailable("database"))
    for qdrant_error in (ResponseHandlingException, UnexpectedResponse):
        app.add_exception_handler(qdrant_error, _unavailable("vector store (Qdrant)"))
    for module in (health, models, dimensions, routing, aptitude, reranker):
        app.include_router(module.router)
    # Limits (issue 10): the body cap, then (outermost, cheapest) the per-caller rate limit.
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.max_body_bytes)
    app.add_middleware(RateLimit, rate=runtime.settings.rate_limit_per_s, burst=runtime.settings.rate_limit_burst)
    return app
