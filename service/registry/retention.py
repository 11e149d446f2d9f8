"""Removes what feedback needs (a decision's query vector, text and dimension weights) after the retention window.

The decision itself (time, query hash, chosen model, costs, latency, caller) stays for the reports; feedback already
given lives on as an evaluation record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from service.store.orm import DecisionDimension, DecisionQuery


@dataclass(frozen=True)
class PurgeResult:
    cutoff: datetime
    queries: int
    dimensions: int


def purge_expired(session: Session, retention_days: float, now: datetime | None = None) -> PurgeResult:
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    queries = session.execute(delete(DecisionQuery).where(DecisionQuery.created_at < cutoff))
    dimensions = session.execute(delete(DecisionDimension).where(DecisionDimension.created_at < cutoff))
    return PurgeResult(cutoff, queries.rowcount or 0, dimensions.rowcount or 0)  # type: ignore[attr-defined]
