"""The routing state: everything stage 1 needs, read from Postgres and Qdrant into arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from profiling.knn import OutcomeTable
from profiling.model_profile import (
    ProfileSums,
    difficulty_adjusted_profile,
    difficulty_shift,
    record_values,
    shrunk_means,
    shrunk_profile,
)
from profiling.query_profile import DimensionCatalog, QueryProfiler
from profiling.scoring import ModelCatalog
from profiling.vector_index import VectorIndex
from service.routing.stage2 import Stage2
from service.settings import Settings
from service.store.generation import DIMENSION, EVALUATIONS, FULL, MODEL, Change
from service.store.orm import EvalQuery, Exemplar, LlmModel, ProfileScore
from service.store.readers import (
    NearestIndex,
    build_profiler,
    exemplar_points,
    load_catalog,
    load_operating_points,
    load_probability_calibration,
    load_records,
    outcome_matrix,
    searchable,
)
from service.store.vector_store import EVAL_QUERIES, EXEMPLARS, VectorStore


@dataclass(frozen=True)
class UpstreamTarget:
    """Where the gateway forwards for one registered model; the key is read from `api_key_env` per request."""

    model: str
    endpoint_url: str
    upstream_model: str
    api_key_env: str | None
    input_usd_per_mtok: float | None
    output_usd_per_mtok: float | None


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
    query_ids: npt.NDArray[np.int64]  # the evaluated query behind each row of `outcomes`
    stage2: Stage2 | None = None
    presets: dict[str, float] = field(default_factory=dict)  # calibrated operating points, name -> lambda
    p_calibration: tuple[float, float] | None = None  # Platt scaling of the final P(correct)
    upstreams: Mapping[str, UpstreamTarget] = field(default_factory=dict)  # active models with an endpoint
    # Scale-out: what an incremental refresh starts from (the generation seen, and the raw arrays behind the
    # searchable views), so a change to one model or one dimension does not reload everything.
    generation: int = 0
    query_index: VectorIndex | None = None
    raw_outcomes: npt.NDArray[np.float32] | None = None  # queries x models, NaN = no record
    exemplar_index: VectorIndex | None = None
    exemplar_dims: npt.NDArray[np.int64] | None = None
    profile_sums: ProfileSums | None = None
    # per model: the sum and number of its record values, behind `means` (shrunk toward the population)
    value_totals: npt.NDArray[np.float64] | None = None
    value_counts: npt.NDArray[np.float64] | None = None

    def routing_profile(self, model: str) -> dict[int, float]:
        """Dimension id -> the score routing uses for `model`: shrunk by evidence and put on everyone's queries,
        not the raw share of its records. Empty for a model routing does not know (inactive, or not loaded yet)."""
        try:
            row = self.models.names.index(model)
        except ValueError:
            return {}
        return {int(d): float(self.profile[row, c]) for c, d in enumerate(self.profiler.catalog.ids)}


def _model_catalog(models: Sequence[LlmModel]) -> ModelCatalog:
    def column(values: list[float | None]) -> npt.NDArray[np.float64]:
        return np.array([np.nan if v is None else v for v in values], np.float64)

    return ModelCatalog(
        names=tuple(m.name for m in models),
        providers=tuple(m.provider for m in models),
        input_usd_per_mtok=column([m.input_usd_per_mtok for m in models]),
        output_usd_per_mtok=column([m.output_usd_per_mtok for m in models]),
        typical_output_tokens=column([m.typical_output_tokens for m in models]),
        mean_cost_usd=column([m.mean_cost_usd for m in models]),
    )


def _profile_sums(
    session: Session,
    catalog: DimensionCatalog,
    model_ids: npt.NDArray[np.int64],
    reuse: tuple[ProfileSums, dict[int, int]] | None = None,
) -> ProfileSums:
    """The stored running sums behind the profiles, in state order.

    `reuse` = (old sums, old row of each model whose sums are still current): only the other models' rows
    are read, so a write for one model reads one model's rows.
    """
    model_col = {int(m): i for i, m in enumerate(model_ids)}
    sums = ProfileSums.zeros(len(model_ids), len(catalog))
    stmt = select(
        ProfileScore.model_id,
        ProfileScore.dimension_id,
        ProfileScore.weighted_sum,
        ProfileScore.support,
        ProfileScore.n,
    )
    if reuse is not None:
        old, old_row = reuse
        keep = [(model_col[m], r) for m, r in old_row.items() if m in model_col]
        if keep:
            new_rows, old_rows = (np.array(x, np.int64) for x in zip(*keep, strict=True))
            sums.weighted_sum[new_rows], sums.support[new_rows] = old.weighted_sum[old_rows], old.support[old_rows]
            sums.count[new_rows] = old.count[old_rows]
        read = [m for m in model_col if m not in old_row]
        if not read:
            return sums
        stmt = stmt.where(ProfileScore.model_id.in_(read))
    columns = {d: i for i, d in enumerate(catalog.ids)}
    for model_id, dimension_id, weighted, support, n in session.execute(stmt):
        if model_id in model_col and dimension_id in columns:
            m, d = model_col[model_id], columns[dimension_id]
            sums.weighted_sum[m, d], sums.support[m, d], sums.count[m, d] = weighted, support, n
    return sums


def _active_models(session: Session) -> list[LlmModel]:
    return list(session.scalars(select(LlmModel).where(LlmModel.status == "active").order_by(LlmModel.id)).all())


def _assemble(
    session: Session,
    store: VectorStore,
    settings: Settings,
    models: Sequence[LlmModel],
    totals: npt.NDArray[np.float64],
    counts: npt.NDArray[np.float64],
    index: VectorIndex,
    outcomes: npt.NDArray[np.float32],
    exemplars: VectorIndex,
    exemplar_dims: npt.NDArray[np.int64],
    profiler: QueryProfiler | None = None,
    generation: int = 0,
    reuse_sums: tuple[ProfileSums, dict[int, int]] | None = None,
) -> RouterState:
    model_ids = np.array([m.id for m in models], np.int64)
    if profiler is None:
        profiler = build_profiler(load_catalog(session), exemplars, exemplar_dims, store, settings)
    sums = _profile_sums(session, profiler.catalog, model_ids, reuse_sums)
    means = shrunk_means(totals, counts, settings.mean_shrinkage)
    if settings.difficulty_adjustment:
        # a model known from a few (easy for it) queries is put on the same queries as the others
        means, profile = difficulty_adjusted_profile(
            sums, means, counts, difficulty_shift(outcomes), settings.mean_shrinkage, settings.shrinkage
        )
    else:
        profile = shrunk_profile(sums, means, settings.shrinkage)
    return RouterState(
        profiler=profiler,
        models=_model_catalog(models),
        model_ids=model_ids,
        profile=profile,
        means=means,
        queries=searchable(settings, store, EVAL_QUERIES, index),
        outcomes=OutcomeTable.from_outcomes(outcomes),
        evaluated_queries=len(index),
        query_ids=index.ids,
        presets=load_operating_points(session),
        p_calibration=load_probability_calibration(session),
        upstreams={
            m.name: UpstreamTarget(
                m.name,
                m.endpoint_url,
                m.upstream_model or m.name,
                m.api_key_env,
                m.input_usd_per_mtok,
                m.output_usd_per_mtok,
            )
            for m in models
            if m.endpoint_url
        },
        generation=generation,
        query_index=index,
        raw_outcomes=outcomes,
        exemplar_index=exemplars,
        exemplar_dims=exemplar_dims,
        profile_sums=sums,
        value_totals=totals,
        value_counts=counts,
    )


def load_state(session: Session, store: VectorStore, settings: Settings, generation: int = 0) -> RouterState:
    """Everything from the stores (start-up, or a change too broad to apply incrementally)."""
    exemplars, exemplar_dims = exemplar_points(store)
    models = _active_models(session)
    model_ids = np.array([m.id for m in models], np.int64)
    model_col = {m.id: i for i, m in enumerate(models)}

    records = load_records(session)
    in_pool = np.isin(records.model_id, model_ids)
    cols = np.array([model_col[m] for m in records.model_id[in_pool]], np.int64)
    values = record_values(records.score[in_pool], records.cost[in_pool], settings.cost_penalty)
    totals = np.bincount(cols, weights=values, minlength=len(models)).astype(np.float64)
    counts = np.bincount(cols, minlength=len(models)).astype(np.float64)

    index, _ = store.snapshot(EVAL_QUERIES)
    outcomes = outcome_matrix(records, index.ids, model_ids).astype(np.float32)
    return _assemble(
        session,
        store,
        settings,
        models,
        totals,
        counts,
        index,
        outcomes,
        exemplars,
        exemplar_dims,
        generation=generation,
    )


def _append_points(
    store: VectorStore, collection: str, index: VectorIndex, wanted: set[int]
) -> tuple[VectorIndex, dict[int, dict[str, object]]]:
    """The index with the wanted points it lacks appended (those Qdrant has)."""
    missing = sorted(wanted - set(index.ids.tolist()))
    if not missing:
        return index, {}
    fresh, payloads = store.retrieve(collection, missing)
    if not len(fresh):
        return index, {}
    return VectorIndex(np.concatenate([index.ids, fresh.ids]), np.vstack([index.vectors, fresh.vectors])), payloads


def refresh_state(
    session: Session,
    store: VectorStore,
    settings: Settings,
    old: RouterState,
    changes: Sequence[Change],
    generation: int,
) -> RouterState:
    """The state after `changes`, recomputing only what they touch; a full load when they are broad.

    Each step re-reads its part from the stores (it is a recomputation, not a delta), so applying a
    change twice, or reading data newer than `generation`, is harmless.
    """
    kinds = {c.kind for c in changes}
    if (
        FULL in kinds
        or old.query_index is None
        or old.raw_outcomes is None
        or old.exemplar_index is None
        or old.value_totals is None
        or old.value_counts is None
    ):
        return load_state(session, store, settings, generation)
    assert old.exemplar_dims is not None

    exemplars, exemplar_dims, profiler = old.exemplar_index, old.exemplar_dims, old.profiler
    if DIMENSION in kinds:  # a new dimension or exemplars: add their points and the catalog column
        in_db = dict(session.execute(select(Exemplar.id, Exemplar.dimension_id)).all())
        exemplars, _ = _append_points(store, EXEMPLARS, exemplars, set(in_db))
        fresh = [in_db.get(int(i), -1) for i in exemplars.ids[len(exemplar_dims) :]]
        exemplar_dims = np.concatenate([exemplar_dims, np.asarray(fresh, np.int64)])
        profiler = build_profiler(load_catalog(session), exemplars, exemplar_dims, store, settings)

    index = old.query_index
    if EVALUATIONS in kinds and session.scalar(select(func.count()).select_from(EvalQuery)) != len(index):
        # evaluations created queries: append their points
        index, _ = _append_points(store, EVAL_QUERIES, index, set(session.scalars(select(EvalQuery.id))))

    changed = {c.model_id for c in changes if c.kind in (EVALUATIONS, MODEL) and c.model_id is not None}
    models = _active_models(session)
    old_col = {int(m): i for i, m in enumerate(old.model_ids)}
    stale = [m.id for m in models if m.id in changed or m.id not in old_col]
    records = load_records(session, model_ids=stale) if stale else None

    outcomes = np.full((len(index), len(models)), np.nan, np.float32)
    totals, counts = np.zeros(len(models)), np.zeros(len(models))
    stale_ids = np.asarray(stale, np.int64)
    stale_col = {m: i for i, m in enumerate(stale)}
    fresh_outcomes = outcome_matrix(records, index.ids, stale_ids).astype(np.float32) if records is not None else None
    for col, model in enumerate(models):
        if model.id in stale_col:
            assert records is not None and fresh_outcomes is not None
            mine = records.model_id == model.id
            values = record_values(records.score[mine], records.cost[mine], settings.cost_penalty)
            totals[col], counts[col] = float(values.sum()), float(len(values))
            outcomes[:, col] = fresh_outcomes[:, stale_col[model.id]]
        else:
            prev = old_col[model.id]
            totals[col], counts[col] = old.value_totals[prev], old.value_counts[prev]
            outcomes[: len(old.query_index), col] = old.raw_outcomes[:, prev]
    reuse = None
    if DIMENSION not in kinds and old.profile_sums is not None:  # same columns: keep the untouched models' sums
        reuse = (old.profile_sums, {m: r for m, r in old_col.items() if m not in stale_col})
    return _assemble(
        session,
        store,
        settings,
        models,
        totals,
        counts,
        index,
        outcomes,
        exemplars,
        exemplar_dims,
        profiler,
        generation,
        reuse,
    )
