"""The routing state: everything stage 1 needs, read from Postgres and Qdrant into arrays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from profiling.knn import OutcomeTable
from profiling.model_profile import ProfileSums, model_means, record_values, shrunk_profile
from profiling.query_profile import QueryProfiler
from profiling.scoring import ModelCatalog
from service.routing.stage2 import Stage2
from service.settings import Settings
from service.store.orm import LlmModel, ProfileScore
from service.store.readers import (
    NearestIndex,
    load_operating_points,
    load_probability_calibration,
    load_profiler,
    load_records,
    outcome_matrix,
    searchable,
)
from service.store.vector_store import EVAL_QUERIES, VectorStore


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
    means = model_means(cols, values, len(models), settings.mean_shrinkage)

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
    )
