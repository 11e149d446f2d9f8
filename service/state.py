"""The routing state: everything stage 1 needs, read from Postgres and Qdrant into arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from profiling.knn import OutcomeTable
from profiling.model_profile import ProfileSums, model_means, record_values, shrunk_profile
from profiling.query_profile import KINDS, DimensionCatalog, ExemplarSet, QueryProfiler
from profiling.scoring import ModelCatalog
from profiling.vector_index import VectorIndex
from service.orm import Dimension, EvalRecord, LlmModel, ProfileScore
from service.settings import Settings
from service.vector_store import EVAL_QUERIES, EXEMPLARS, VectorStore

if TYPE_CHECKING:
    from service.reranker_registry import Stage2


class NearestIndex(Protocol):
    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...


class QdrantIndex:
    """Searches Qdrant itself (for collections too big to mirror in memory); same contract as VectorIndex."""

    def __init__(
        self, store: VectorStore, collection: str, ids: npt.NDArray[np.int64], where: dict[str, str] | None = None
    ) -> None:
        self.store, self.collection, self.where = store, collection, where
        self._row = {int(i): r for r, i in enumerate(ids)}

    def search(self, queries: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        hits = self.store.search(self.collection, queries, k, self.where)
        width = min((len(h) for h in hits), default=0)
        rows = np.array([[self._row[h.id] for h in hit[:width] if h.id in self._row] for hit in hits], np.int64)
        sims = np.array([[h.score for h in hit[:width] if h.id in self._row] for hit in hits], np.float32)
        return rows.reshape(len(hits), -1), sims.reshape(len(hits), -1)


def _searchable(
    settings: Settings, store: VectorStore, collection: str, index: VectorIndex, where: dict[str, str] | None = None
) -> NearestIndex:
    if settings.search_backend == "qdrant":
        return QdrantIndex(store, collection, index.ids, where)
    return index


def load_profiler(session: Session, store: VectorStore, settings: Settings) -> QueryProfiler:
    """Dimension catalog plus exemplar vectors (points of deleted dimensions are ignored)."""
    dims = session.execute(select(Dimension.id, Dimension.name, Dimension.kind).order_by(Dimension.id)).all()
    catalog = DimensionCatalog(tuple(d.id for d in dims), tuple(d.name for d in dims), tuple(d.kind for d in dims))
    index, payloads = store.snapshot(EXEMPLARS)
    kind_of = {d.id: d.kind for d in dims}
    exemplars = {}
    for kind in KINDS:
        keep = np.array([kind_of.get(payloads[int(i)].get("dimension_id")) == kind for i in index.ids], dtype=bool)
        part = VectorIndex(index.ids[keep], index.vectors[keep])
        columns = np.array([catalog.column(payloads[int(i)]["dimension_id"]) for i in part.ids], dtype=np.int64)
        searchable = _searchable(settings, store, EXEMPLARS, part, {"kind": kind})
        exemplars[kind] = ExemplarSet(searchable, columns)  # type: ignore[arg-type]
    return QueryProfiler(catalog, exemplars, settings.exemplar_top_k, settings.rank_decay, settings.max_dimensions)


@dataclass(frozen=True)
class RecordArrays:
    model_id: npt.NDArray[np.int64]
    query_id: npt.NDArray[np.int64]
    score: npt.NDArray[np.float64]
    cost: npt.NDArray[np.float64]


def load_records(session: Session, sources: Sequence[str] | None = None) -> RecordArrays:
    stmt = select(EvalRecord.model_id, EvalRecord.query_id, EvalRecord.score, EvalRecord.cost_usd)
    if sources is not None:
        stmt = stmt.where(EvalRecord.source.in_(list(sources)))
    rows = session.execute(stmt).all()
    if not rows:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
        return RecordArrays(empty_i, empty_i, empty_f, empty_f)
    model_id, query_id, score, cost = zip(*rows, strict=True)
    return RecordArrays(
        np.asarray(model_id, np.int64),
        np.asarray(query_id, np.int64),
        np.asarray(score, np.float64),
        np.asarray([np.nan if c is None else c for c in cost], np.float64),
    )


def outcome_matrix(
    records: RecordArrays, query_ids: npt.NDArray[np.int64], model_ids: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """(queries x models) mean score of the records, NaN where a model has none for a query."""
    query_row = {int(q): r for r, q in enumerate(query_ids)}
    model_col = {int(m): c for c, m in enumerate(model_ids)}
    rows = np.array([query_row.get(int(q), -1) for q in records.query_id], np.int64)
    cols = np.array([model_col.get(int(m), -1) for m in records.model_id], np.int64)
    found = (rows >= 0) & (cols >= 0)
    totals = np.zeros((len(query_ids), len(model_ids)))
    counts = np.zeros_like(totals)
    np.add.at(totals, (rows[found], cols[found]), records.score[found])
    np.add.at(counts, (rows[found], cols[found]), 1.0)
    return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


@dataclass(frozen=True)
class RouterState:
    """An immutable snapshot; writers build a new one and swap it in, readers never lock."""

    profiler: QueryProfiler
    models: ModelCatalog
    model_ids: npt.NDArray[np.int64]
    profile: npt.NDArray[np.float64]
    means: npt.NDArray[np.float64]
    queries: NearestIndex
    outcomes: OutcomeTable
    evaluated_queries: int
    stage2: Stage2 | None = None


def load_state(session: Session, store: VectorStore, settings: Settings) -> RouterState:
    profiler = load_profiler(session, store, settings)
    catalog = profiler.catalog
    models = session.scalars(select(LlmModel).where(LlmModel.status == "active").order_by(LlmModel.id)).all()
    model_ids = np.array([m.id for m in models], np.int64)
    model_col = {m.id: i for i, m in enumerate(models)}

    records = load_records(session)
    in_pool = np.isin(records.model_id, model_ids)
    cols = np.array([model_col[m] for m in records.model_id[in_pool]], np.int64)
    values = record_values(records.score[in_pool], records.cost[in_pool], settings.cost_penalty)
    means = model_means(cols, values, len(models))

    sums = ProfileSums.zeros(len(models), len(catalog))
    for row in session.execute(select(ProfileScore)).scalars():
        if row.model_id in model_col:
            m, d = model_col[row.model_id], catalog.column(row.dimension_id)
            sums.weighted_sum[m, d], sums.support[m, d], sums.count[m, d] = row.weighted_sum, row.support, row.n
    profile = shrunk_profile(sums, means, settings.shrinkage)

    index, _ = store.snapshot(EVAL_QUERIES)
    outcomes = outcome_matrix(records, index.ids, model_ids).astype(np.float32)

    def column(values: list[float | None]) -> npt.NDArray[np.float64]:
        return np.array([np.nan if v is None else v for v in values], np.float64)

    catalog_models = ModelCatalog(
        names=tuple(m.name for m in models),
        providers=tuple(m.provider for m in models),
        input_usd_per_mtok=column([m.input_usd_per_mtok for m in models]),
        output_usd_per_mtok=column([m.output_usd_per_mtok for m in models]),
        typical_output_tokens=column([m.typical_output_tokens for m in models]),
        mean_cost_usd=column([m.mean_cost_usd for m in models]),
    )
    return RouterState(
        profiler=profiler,
        models=catalog_models,
        model_ids=model_ids,
        profile=profile,
        means=means,
        queries=_searchable(settings, store, EVAL_QUERIES, index),
        outcomes=OutcomeTable.from_outcomes(outcomes),
        evaluated_queries=len(index),
    )
