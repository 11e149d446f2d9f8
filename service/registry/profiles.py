"""Writes model profiles: full rebuild from all records, or incremental sums for new records."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from profiling.model_profile import accumulate, record_values
from profiling.query_profile import QueryProfiler
from service.settings import Settings
from service.store.generation import FULL, bump_generation
from service.store.orm import EvalQueryDimension, EvalRecord, LlmModel, ProfileScore
from service.store.readers import load_profiler, load_records
from service.store.upsert import upsert
from service.store.vector_store import EVAL_QUERIES, VectorStore


@dataclass(frozen=True)
class RebuildStats:
    queries: int
    records: int
    profile_cells: int


def store_query_profiles(
    session: Session, profiler: QueryProfiler, query_ids: Sequence[int], vectors: np.ndarray
) -> np.ndarray:
    """Profiles evaluation queries with the serving profiler and stores their dimension weights."""
    weights, _, _ = profiler.profile_vectors(vectors)
    session.execute(delete(EvalQueryDimension).where(EvalQueryDimension.query_id.in_(list(query_ids))))
    q, d = np.nonzero(weights)
    upsert(
        session,
        EvalQueryDimension.__table__,  # type: ignore[arg-type]
        [
            {
                "query_id": int(query_ids[int(i)]),
                "dimension_id": profiler.catalog.ids[int(j)],
                "weight": float(weights[i, j]),
            }
            for i, j in zip(q, d, strict=True)
        ],
        keys=("query_id", "dimension_id"),
        update=("weight",),
    )
    return weights


def refresh_model_stats(session: Session, model_ids: Sequence[int] | None = None) -> None:
    """Typical output length and mean observed cost per model (all models, or just these), for cost estimates."""
    records = EvalRecord.__table__
    stmt = update(LlmModel).values(
        typical_output_tokens=select(func.avg(records.c.output_tokens))
        .where(records.c.model_id == LlmModel.id, records.c.output_tokens > 0)
        .scalar_subquery(),
        mean_cost_usd=select(func.avg(records.c.cost_usd)).where(records.c.model_id == LlmModel.id).scalar_subquery(),
    )
    if model_ids is not None:
        stmt = stmt.where(LlmModel.id.in_(list(model_ids)))
    session.execute(stmt)


def rebuild_profiles(session: Session, store: VectorStore, settings: Settings) -> RebuildStats:
    """Re-profiles every evaluation query and recomputes every model profile from scratch."""
    profiler = load_profiler(session, store, settings)
    index, _ = store.snapshot(EVAL_QUERIES)
    session.execute(delete(EvalQueryDimension))
    weights = store_query_profiles(session, profiler, [int(i) for i in index.ids], index.vectors)

    records = load_records(session)
    query_row = {int(q): r for r, q in enumerate(index.ids)}
    rows = np.array([query_row.get(int(q), -1) for q in records.query_id], np.int64)
    found = rows >= 0
    model_ids = np.unique(records.model_id[found])
    model_index = np.searchsorted(model_ids, records.model_id[found])
    values = record_values(records.score[found], records.cost[found], settings.cost_penalty)
    sums = accumulate(weights, model_index, rows[found], values, len(model_ids))

    session.execute(delete(ProfileScore))
    m, d = np.nonzero(sums.count)
    upsert(
        session,
        ProfileScore.__table__,  # type: ignore[arg-type]
        [
            {
                "model_id": int(model_ids[i]),
                "dimension_id": profiler.catalog.ids[j],
                "weighted_sum": float(sums.weighted_sum[i, j]),
                "support": float(sums.support[i, j]),
                "n": int(sums.count[i, j]),
            }
            for i, j in zip(m, d, strict=True)
        ],
        keys=("model_id", "dimension_id"),
    )
    refresh_model_stats(session)
    bump_generation(session, FULL)
    return RebuildStats(queries=len(index), records=int(found.sum()), profile_cells=len(m))


def profiles_are_stale(session: Session, store: VectorStore, settings: Settings, sample: int = 256) -> bool:
    """Whether the stored query profiles differ from what the serving profiler gives now, on an even sample of the
    evaluation queries: after an upgrade that profiles queries differently, or a settings change, the stored ones
    (and the model profiles summed from them) would no longer match the profiles of incoming queries."""
    index, _ = store.snapshot(EVAL_QUERIES)
    if not len(index):
        return False
    picked = np.unique(np.linspace(0, len(index) - 1, min(sample, len(index))).astype(np.int64))
    ids = [int(i) for i in index.ids[picked]]
    profiler = load_profiler(session, store, settings)
    fresh, _, _ = profiler.profile_vectors(index.vectors[picked])
    stored = np.zeros_like(fresh)
    row = {q: r for r, q in enumerate(ids)}
    column = {d: c for c, d in enumerate(profiler.catalog.ids)}
    for query_id, dimension_id, weight in session.execute(
        select(EvalQueryDimension.query_id, EvalQueryDimension.dimension_id, EvalQueryDimension.weight).where(
            EvalQueryDimension.query_id.in_(ids)
        )
    ):
        if dimension_id not in column:
            return True  # a profile names a dimension that is gone
        stored[row[query_id], column[dimension_id]] = weight
    return not np.allclose(stored, fresh, rtol=0.0, atol=1e-6)


@dataclass(frozen=True)
class RecordChange:
    """A record's value before (None if new) and after an upsert."""

    query_id: int
    old_value: float | None
    new_value: float


def apply_record_changes(session: Session, model_id: int, changes: Sequence[RecordChange]) -> None:
    """Incremental profile update: add each changed record's weighted value to the model's sums."""
    weights = defaultdict(list)
    for link in session.execute(
        select(EvalQueryDimension).where(EvalQueryDimension.query_id.in_([c.query_id for c in changes]))
    ).scalars():
        weights[link.query_id].append((link.dimension_id, link.weight))
    delta: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for change in changes:
        is_new = change.old_value is None
        diff = change.new_value - (change.old_value or 0.0)
        for dimension_id, weight in weights[change.query_id]:
            cell = delta[dimension_id]
            cell[0] += diff * weight
            cell[1] += weight if is_new else 0.0
            cell[2] += 1 if is_new else 0
    existing = {
        row.dimension_id: row
        for row in session.execute(
            select(ProfileScore).where(ProfileScore.model_id == model_id, ProfileScore.dimension_id.in_(list(delta)))
        ).scalars()
    }
    for dimension_id, (weighted, support, count) in delta.items():
        row = existing.get(dimension_id)
        if row is None:
            session.add(
                ProfileScore(
                    model_id=model_id,
                    dimension_id=dimension_id,
                    weighted_sum=weighted,
                    support=support,
                    n=int(count),
                )
            )
        else:
            row.weighted_sum += weighted
            row.support += support
            row.n += int(count)
    session.flush()
