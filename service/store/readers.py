"""Plain read helpers over both stores, shared by the write path (registry) and the read path (routing)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from profiling.query_profile import CAPABILITY, KINDS, DimensionCatalog, ExemplarClassifier, ExemplarSet, QueryProfiler
from profiling.vector_index import VectorIndex
from service.errors import NotFoundError
from service.settings import Settings
from service.store.orm import (
    AptitudeResult,
    AptitudeTask,
    AptitudeTest,
    Dimension,
    EvalRecord,
    LlmModel,
    OperatingPoint,
    ProbabilityCalibration,
    RerankerCheckpoint,
)
from service.store.vector_store import EVAL_QUERIES, EXEMPLARS, VectorStore


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


def searchable(
    settings: Settings, store: VectorStore, collection: str, index: VectorIndex, where: dict[str, str] | None = None
) -> NearestIndex:
    if settings.search_backend == "qdrant":
        return QdrantIndex(store, collection, index.ids, where)
    return index


def load_catalog(session: Session) -> DimensionCatalog:
    dims = session.execute(
        select(Dimension.id, Dimension.name, Dimension.kind, Dimension.catch_all).order_by(Dimension.id)
    ).all()
    return DimensionCatalog(
        tuple(d.id for d in dims),
        tuple(d.name for d in dims),
        tuple(d.kind for d in dims),
        tuple(bool(d.catch_all) for d in dims),
    )


def exemplar_points(store: VectorStore) -> tuple[VectorIndex, npt.NDArray[np.int64]]:
    """Every exemplar point and the dimension id each belongs to (-1 when its payload has none)."""
    index, payloads = store.snapshot(EXEMPLARS)
    dims = np.array([int(payloads[int(i)].get("dimension_id", -1)) for i in index.ids], np.int64)
    return index, dims


_CLASSIFIERS: OrderedDict[tuple[str, float], ExemplarClassifier | None] = OrderedDict()
_CLASSIFIERS_KEPT = 4
_CLASSIFIERS_LOCK = threading.Lock()


def _capability_classifier(points: VectorIndex, columns: npt.NDArray[np.int64], c: float) -> ExemplarClassifier | None:
    """The classifier over these exemplar points, fitted once per set of points (vectors and columns): a profiler
    is built for every evaluations write that brings new queries, and refitting (about half a second) each time
    would slow them all; hashing the points takes milliseconds."""
    digest = hashlib.sha256(np.ascontiguousarray(points.vectors, np.float32).tobytes())
    digest.update(np.ascontiguousarray(columns, np.int64).tobytes())
    key = (digest.hexdigest(), c)
    with _CLASSIFIERS_LOCK:
        if key in _CLASSIFIERS:
            _CLASSIFIERS.move_to_end(key)
            return _CLASSIFIERS[key]
    classifier = ExemplarClassifier.fit(points.vectors, columns, c)
    with _CLASSIFIERS_LOCK:
        _CLASSIFIERS[key] = classifier
        while len(_CLASSIFIERS) > _CLASSIFIERS_KEPT:
            _CLASSIFIERS.popitem(last=False)
    return classifier


def build_profiler(
    catalog: DimensionCatalog,
    points: VectorIndex,
    point_dims: npt.NDArray[np.int64],
    store: VectorStore,
    settings: Settings,
) -> QueryProfiler:
    """A profiler from exemplar points already in memory (points of deleted dimensions are ignored)."""
    kind_of = dict(zip(catalog.ids, catalog.kinds, strict=True))
    exemplars = {}
    classifiers = {}
    for kind in KINDS:
        keep = np.array([kind_of.get(int(d)) == kind for d in point_dims], dtype=bool)
        part = VectorIndex(points.ids[keep], points.vectors[keep])
        columns = np.array([catalog.column(int(d)) for d in point_dims[keep]], dtype=np.int64)
        searcher = searchable(settings, store, EXEMPLARS, part, {"kind": kind})
        exemplars[kind] = ExemplarSet(searcher, columns)  # type: ignore[arg-type]
        if kind == CAPABILITY and settings.capability_classifier_c > 0:
            classifier = _capability_classifier(part, columns, settings.capability_classifier_c)
            if classifier is not None:
                classifiers[kind] = classifier
    return QueryProfiler(
        catalog,
        exemplars,
        settings.exemplar_top_k,
        settings.rank_decay,
        settings.max_dimensions,
        {"domain": settings.domain_min_similarity, "capability": settings.capability_min_similarity},
        classifiers,
    )


def load_profiler(session: Session, store: VectorStore, settings: Settings) -> QueryProfiler:
    """Dimension catalog plus exemplar vectors (points of deleted dimensions are ignored)."""
    points, point_dims = exemplar_points(store)
    return build_profiler(load_catalog(session), points, point_dims, store, settings)


@dataclass(frozen=True)
class RecordArrays:
    model_id: npt.NDArray[np.int64]
    query_id: npt.NDArray[np.int64]
    score: npt.NDArray[np.float64]
    cost: npt.NDArray[np.float64]


def load_records(
    session: Session, sources: Sequence[str] | None = None, model_ids: Sequence[int] | None = None
) -> RecordArrays:
    stmt = select(EvalRecord.model_id, EvalRecord.query_id, EvalRecord.score, EvalRecord.cost_usd)
    if sources is not None:
        stmt = stmt.where(EvalRecord.source.in_(list(sources)))
    if model_ids is not None:
        stmt = stmt.where(EvalRecord.model_id.in_([int(m) for m in model_ids]))
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
class EvaluationMatrix:
    """Evaluation queries that have vectors, and every active model's outcomes on them (NaN = none)."""

    query_ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    model_ids: list[int]
    outcomes: npt.NDArray[np.float64]


def evaluation_matrix(
    session: Session, store: VectorStore, sources: Sequence[str] = ("import", "api")
) -> EvaluationMatrix:
    index, _ = store.snapshot(EVAL_QUERIES)
    model_ids = list(session.scalars(select(LlmModel.id).where(LlmModel.status == "active").order_by(LlmModel.id)))
    outcomes = outcome_matrix(load_records(session, sources), index.ids, np.asarray(model_ids, np.int64))
    return EvaluationMatrix(index.ids, index.vectors, model_ids, outcomes)


def current_test(session: Session) -> AptitudeTest | None:
    return session.scalar(
        select(AptitudeTest)
        .options(selectinload(AptitudeTest.tasks).selectinload(AptitudeTask.items))
        .order_by(AptitudeTest.version.desc())
        .limit(1)
    )


def aptitude_matrix(session: Session, test: AptitudeTest, model_ids: Sequence[int]) -> npt.NDArray[np.float64]:
    """(models x tasks) accuracy, NaN where a model has no result for a task."""
    column = {task.id: c for c, task in enumerate(test.tasks)}
    row = {m: r for r, m in enumerate(model_ids)}
    matrix = np.full((len(model_ids), len(test.tasks)), np.nan)
    for model_id, task_id, accuracy in session.execute(
        select(AptitudeResult.model_id, AptitudeResult.task_id, AptitudeResult.accuracy).where(
            AptitudeResult.task_id.in_(list(column)), AptitudeResult.model_id.in_(list(model_ids))
        )
    ):
        matrix[row[model_id], column[task_id]] = accuracy
    return matrix


def get_checkpoint(session: Session, version: int) -> RerankerCheckpoint:
    checkpoint = session.scalar(select(RerankerCheckpoint).where(RerankerCheckpoint.version == version))
    if checkpoint is None:
        raise NotFoundError(f"version: no re-ranker checkpoint v{version}")
    return checkpoint


def active_checkpoint(session: Session) -> RerankerCheckpoint | None:
    return session.scalar(select(RerankerCheckpoint).where(RerankerCheckpoint.active.is_(True)))


def list_checkpoints(session: Session) -> list[RerankerCheckpoint]:
    return list(session.scalars(select(RerankerCheckpoint).order_by(RerankerCheckpoint.version)))


FINAL_P_CORRECT = "final_p_correct"


def load_probability_calibration(session: Session) -> tuple[float, float] | None:
    """(scale, bias) of the final P(correct)'s Platt scaling, None until calibrated."""
    row = session.get(ProbabilityCalibration, FINAL_P_CORRECT)
    return None if row is None else (row.scale, row.bias)


def load_operating_points(session: Session) -> dict[str, float]:
    """The calibrated presets, name -> lambda (empty until `capprof presets calibrate` has run)."""
    return {p.name: p.cost_weight for p in session.scalars(select(OperatingPoint))}
