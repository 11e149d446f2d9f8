"""Evaluation runs kept in the database (`capprof evaluate --store`), for the console's Quality page."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.store.orm import EvaluationRun


def _json_safe(value: Any) -> Any:
    """The report as strict JSON: NaN and infinities (a curve point with no cost) become null, which JSONB accepts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def store_evaluation(session: Session, report: dict[str, Any], options: dict[str, Any]) -> EvaluationRun:
    """Stores one run's report (as report.json holds it) with the options it ran with."""
    if not isinstance(report.get("benchmark"), str) or not isinstance(report.get("cost_quality"), dict):
        raise ValueError("report: needs 'benchmark' and 'cost_quality' (an evaluate report.json)")
    row = EvaluationRun(
        benchmark=report["benchmark"],
        seed=int(report.get("seed", 0)),
        options=_json_safe(options),
        report=_json_safe(report),
    )
    session.add(row)
    session.flush()
    return row


def latest_evaluations(session: Session) -> list[EvaluationRun]:
    """The newest stored run of each benchmark, by benchmark name."""
    newest = select(EvaluationRun.benchmark, func.max(EvaluationRun.id).label("id")).group_by(EvaluationRun.benchmark)
    ids = [row.id for row in session.execute(newest)]
    if not ids:
        return []
    return list(
        session.scalars(select(EvaluationRun).where(EvaluationRun.id.in_(ids)).order_by(EvaluationRun.benchmark))
    )
