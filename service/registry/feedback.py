"""Feedback on a routed decision becomes an evaluation record (source = feedback) for the model that served it.

The decision's query becomes an evaluation query (benchmark "feedback", external id = decision id) with the decision's
own vector and dimension weights, so the model's profile cells on those dimensions move at once (through the same
incremental update as any other record) and the kNN estimate sees the outcome after the next state reload.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from profiling.embedding_cache import CachedEmbedder
from service.errors import ConflictError, NotFoundError
from service.registry.catalog import EvaluationInput, add_evaluations
from service.settings import Settings
from service.store.orm import (
    DecisionDimension,
    DecisionQuery,
    EvalQuery,
    EvalQueryDimension,
    Feedback,
    LlmModel,
    RoutingDecision,
)
from service.store.upsert import upsert
from service.store.vector_store import EVAL_QUERIES, VectorStore

FEEDBACK_BENCHMARK = "feedback"


class FeedbackGoneError(LookupError):
    """The decision is older than the retention window: what feedback needs has been (or is due to be) removed."""


@dataclass(frozen=True)
class FeedbackInput:
    decision_id: str
    score: float
    cost_usd: float | None = None
    output_tokens: int | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class FeedbackResult:
    decision_id: str
    model: str
    overwritten: bool


def as_utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _evaluation_query(session: Session, store: VectorStore, decision: RoutingDecision, kept: DecisionQuery) -> int:
    """The decision's query as an evaluation query: its vector in Qdrant and its decision-time dimension weights."""
    existing = session.scalar(
        select(EvalQuery.id).where(EvalQuery.benchmark == FEEDBACK_BENCHMARK, EvalQuery.external_id == decision.id)
    )
    if existing is not None:
        return existing
    query = EvalQuery(
        benchmark=FEEDBACK_BENCHMARK,
        external_id=decision.id,
        text=kept.query_text or "",
        text_hash=decision.query_hash,
    )
    session.add(query)
    session.flush()
    store.upsert(
        EVAL_QUERIES, [query.id], np.frombuffer(kept.vector, np.float32)[None, :], [{"benchmark": FEEDBACK_BENCHMARK}]
    )
    weights = session.execute(
        select(DecisionDimension.dimension_id, DecisionDimension.weight).where(
            DecisionDimension.decision_id == decision.id
        )
    ).all()
    upsert(
        session,
        EvalQueryDimension.__table__,  # type: ignore[arg-type]
        [{"query_id": query.id, "dimension_id": d, "weight": w} for d, w in weights],
        keys=("query_id", "dimension_id"),
        update=("weight",),
    )
    return query.id


def record_feedback(
    session: Session,
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    item: FeedbackInput,
    caller: str | None,
    may_see_all: bool,
    now: datetime | None = None,
) -> FeedbackResult:
    """Writes the feedback and its evaluation record. A key sees only its own decisions unless `may_see_all`
    (admins, and anonymous callers where keys are not required)."""
    now = now or datetime.now(UTC)
    decision = session.get(RoutingDecision, item.decision_id)
    if decision is None or (not may_see_all and decision.key_name != caller):
        raise NotFoundError(f"decision_id: no decision {item.decision_id!r}")
    if as_utc(decision.created_at) < now - timedelta(days=settings.retention_days):
        raise FeedbackGoneError(
            f"decision_id: decision {item.decision_id!r} is older than the {settings.retention_days:g}-day "
            "retention window; its query data has been removed"
        )
    kept = session.get(DecisionQuery, decision.id)
    if kept is None:
        raise FeedbackGoneError(f"decision_id: the query data of decision {item.decision_id!r} has been purged")
    previous = session.scalar(select(Feedback).where(Feedback.decision_id == decision.id))
    if previous is not None and not item.overwrite:
        raise ConflictError(
            f"decision_id: feedback for decision {item.decision_id!r} was already given; send overwrite=true to replace it"
        )
    # After a gateway fallback the answer came from another model than the one chosen: that one earns the record.
    credited = decision.served_model or decision.chosen_model
    model = session.scalar(select(LlmModel).where(LlmModel.name == credited))
    if model is None:
        raise ConflictError(f"decision_id: the model {credited!r} is no longer registered")
    query_id = _evaluation_query(session, store, decision, kept)
    add_evaluations(
        session,
        store,
        embedder,
        settings,
        model,
        [
            EvaluationInput(
                score=item.score,
                benchmark=FEEDBACK_BENCHMARK,
                query_id=decision.id,
                cost_usd=item.cost_usd,
                output_tokens=item.output_tokens,
            )
        ],
        source="feedback",
    )
    row = previous or Feedback(decision_id=decision.id, created_at=now, query_vector=kept.vector)
    row.updated_at, row.model, row.caller, row.eval_query_id = now, model.name, caller, query_id
    row.score, row.cost_usd, row.output_tokens = item.score, item.cost_usd, item.output_tokens
    session.add(row)
    session.flush()
    return FeedbackResult(decision.id, model.name, previous is not None)
