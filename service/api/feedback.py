"""POST /v1/feedback: the observed outcome of a routed decision, learned at once (profile) and by kNN."""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.api.auth import Caller, RouteKeyDep
from service.api.deps import DecisionLogDep, MetricsDep, RuntimeDep, SessionDep
from service.api.responses import errors
from service.api.schemas import MAX_QUERY_COST_USD, Count, Strict
from service.errors import ConflictError, NotFoundError
from service.registry.feedback import FeedbackGoneError, FeedbackInput, FeedbackResult, record_feedback
from service.routing.reloader import CoalescedReload
from service.runtime import Runtime
from service.store.orm import RoutingDecision

router = APIRouter(prefix="/v1", tags=["feedback"])
SQLITE_BUSY_RETRIES = 5
_SQLITE_WRITER = threading.Lock()  # SQLite has one writer: feedback queues here instead of failing on each other


class FeedbackIn(Strict):
    decision_id: str = Field(min_length=1, max_length=36, description="from the route answer")
    score: float = Field(ge=0, le=1, description="1 = the model that served answered correctly, 0 = wrong")
    cost_usd: float | None = Field(
        default=None, ge=0, le=MAX_QUERY_COST_USD, description="what the answer actually cost (USD)"
    )
    output_tokens: Count | None = None
    overwrite: bool = Field(default=False, description="replace earlier feedback on this decision (else 409)")


class FeedbackOut(BaseModel):
    decision_id: str
    model: str
    score: float
    cost_usd: float | None
    output_tokens: int | None
    overwritten: bool


def _record(session: Session, runtime: Runtime, body: FeedbackIn, caller: Caller) -> FeedbackResult:
    with session.begin():
        try:
            return record_feedback(
                session,
                runtime.store,
                runtime.embedder,
                runtime.settings,
                FeedbackInput(body.decision_id, body.score, body.cost_usd, body.output_tokens, body.overwrite),
                caller.name,
                may_see_all=not caller.authenticated or caller.scope == "admin",
            )
        except NotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
        except ConflictError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        except FeedbackGoneError as exc:
            raise HTTPException(status.HTTP_410_GONE, detail=str(exc)) from exc


@router.post("/feedback", responses=errors(401, 403, 404, 409, 410, 422, 503))
def give_feedback(
    request: Request,
    body: FeedbackIn,
    session: SessionDep,
    runtime: RuntimeDep,
    log: DecisionLogDep,
    metrics: MetricsDep,
    caller: RouteKeyDep,
) -> FeedbackOut:
    """404 unknown decision (or another key's), 409 feedback already given (unless overwrite), 410 past retention."""
    if log.pending:
        with runtime.sessions() as probe:
            known = probe.scalar(select(RoutingDecision.id).where(RoutingDecision.id == body.decision_id))
        if known is None:
            log.flush()  # the decision may still be queued for the database
    sqlite = session.get_bind().dialect.name == "sqlite"
    for attempt in range(SQLITE_BUSY_RETRIES + 1):
        try:
            with _SQLITE_WRITER if sqlite else nullcontext():
                result = _record(session, runtime, body, caller)
            break
        except OperationalError as exc:  # SQLite allows one writer: a clash with another write is retried
            if attempt == SQLITE_BUSY_RETRIES or "database is locked" not in str(exc):
                raise
            time.sleep(0.02 * (attempt + 1))
    # The profile cells changed in this transaction; the routing state (profile and kNN) follows in the background,
    # feedback arriving meanwhile shares the next reload, and no request thread waits for one.
    reloader: CoalescedReload = request.app.state.reloader
    reloader.request()
    metrics.feedback.labels(result.model).inc()
    return FeedbackOut(
        decision_id=result.decision_id,
        model=result.model,
        score=body.score,
        cost_usd=body.cost_usd,
        output_tokens=body.output_tokens,
        overwritten=result.overwritten,
    )
