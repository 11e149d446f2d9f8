"""The routing-state generation: every write that changes routing bumps it, as part of its own transaction.

A bump is noted on the session and taken when the transaction commits: one update of a one-row counter, whose
row lock orders concurrent writers, so generations commit in the order they were taken and a replica that has
seen generation G has seen every change up to G. Each change is recorded with what it touched (a kind plus the
model or dimension), which lets replicas refresh only that.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, event, insert, select, update
from sqlalchemy.orm import Session

from service.store.orm import RoutingChange, RoutingGeneration

# Change kinds. EVALUATIONS: records of one model (import through the API, aptitude answers, feedback);
# MODEL: a model registered, updated or deleted; DIMENSION: a dimension or its exemplars; APTITUDE: aptitude
# test or results; RERANKER: the active checkpoint; PRESETS: the operating points and the calibration of P(correct);
# FULL: anything broad (import, profile rebuild, reindex).
EVALUATIONS, MODEL, DIMENSION, APTITUDE, RERANKER, PRESETS, FULL = (
    "evaluations",
    "model",
    "dimension",
    "aptitude",
    "reranker",
    "presets",
    "full",
)
KINDS = (EVALUATIONS, MODEL, DIMENSION, APTITUDE, RERANKER, PRESETS, FULL)
KEEP_CHANGES = 10_000  # change events kept; a replica further behind reloads in full
PRUNE_EVERY = 1_000
PENDING, WRITTEN = "routing_changes_pending", "routing_generation_written"


@dataclass(frozen=True)
class Change:
    generation: int
    kind: str
    model_id: int | None = None
    dimension_id: int | None = None


def bump_generation(session: Session, kind: str, model_id: int | None = None, dimension_id: int | None = None) -> None:
    """Records that this transaction changes routing; the generation is taken when it commits.

    Taking it at commit keeps the counter's row lock for the last moment only, so a long write (an import,
    an embedding) never queues the other writers behind it. A rolled-back transaction takes nothing.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown routing change kind {kind!r}")
    pending: list[tuple[str, int | None, int | None]] = session.info.setdefault(PENDING, [])
    change = (kind, model_id, dimension_id)
    if change not in pending:
        pending.append(change)


def take_generations(session: Session) -> int | None:
    """Writes the pending changes: one generation each, in one counter update. Runs just before commit."""
    pending: list[tuple[str, int | None, int | None]] = session.info.pop(PENDING, [])
    if not pending:
        return None
    value = session.execute(
        update(RoutingGeneration)
        .where(RoutingGeneration.id == 1)
        .values(value=RoutingGeneration.value + len(pending))
        .returning(RoutingGeneration.value)
    ).scalar_one_or_none()
    if value is None:  # a database created without the migration's seed row
        value = len(pending)
        session.execute(insert(RoutingGeneration).values(id=1, value=value))
    first = value - len(pending) + 1
    session.execute(
        insert(RoutingChange),
        [
            {"generation": first + i, "kind": kind, "model_id": model_id, "dimension_id": dimension_id}
            for i, (kind, model_id, dimension_id) in enumerate(pending)
        ],
    )
    if value // PRUNE_EVERY != (first - 1) // PRUNE_EVERY:
        session.execute(delete(RoutingChange).where(RoutingChange.generation <= value - KEEP_CHANGES))
    session.info[WRITTEN] = int(value)
    return int(value)


@event.listens_for(Session, "before_commit")
def _take_on_commit(session: Session) -> None:
    take_generations(session)


@event.listens_for(Session, "after_rollback")
def _drop_on_rollback(session: Session) -> None:
    session.info.pop(PENDING, None)


def current_generation(session: Session) -> int:
    """The committed generation (one primary-key read: cheap enough to poll every second)."""
    value = session.scalar(select(RoutingGeneration.value).where(RoutingGeneration.id == 1))
    return int(value or 0)


def changes_since(session: Session, after: int, upto: int) -> list[Change] | None:
    """The changes in (after, upto]; None when some were pruned (the caller reloads in full)."""
    rows = session.execute(
        select(RoutingChange.generation, RoutingChange.kind, RoutingChange.model_id, RoutingChange.dimension_id)
        .where(RoutingChange.generation > after, RoutingChange.generation <= upto)
        .order_by(RoutingChange.generation)
    ).all()
    if len(rows) != upto - after:
        return None
    return [Change(int(g), k, m, d) for g, k, m, d in rows]


def written_generation(session: Session) -> int | None:
    """The generation this session's transaction took last (None if it changed nothing that routes)."""
    value = session.info.get(WRITTEN)
    return int(value) if value is not None else None
