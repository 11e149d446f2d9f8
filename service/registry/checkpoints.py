"""Model-SAT checkpoints: train from the database, version them, activate one, load the active one."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from profiling.embedding_cache import CachedEmbedder
from profiling.evaluation import is_test
from profiling.model_heads import ModelHeads, head_keys, train_heads
from profiling.model_sat import ModelSat, ModelSatConfig, aptitude_vectors, expected_calibration_error, train_model_sat
from service.errors import NotFoundError
from service.settings import Settings
from service.store.generation import RERANKER, bump_generation
from service.store.orm import AptitudeTest, EvalQuery, RerankerCheckpoint
from service.store.readers import EvaluationMatrix, current_test, evaluation_matrix, get_checkpoint
from service.store.vector_store import VectorStore

VALIDATION_SEED = 1
VALIDATION_SHARE = 0.1


@dataclass(frozen=True)
class TrainingData:
    matrix: EvaluationMatrix
    item_outcomes: npt.NDArray[np.float64]  # models x tasks x items
    task_texts: list[str]
    validation_rows: npt.NDArray[np.int64]
    fingerprint: str
    records_beyond_items: npt.NDArray[np.int64]  # per model: outcomes on queries that are not aptitude items


def training_data(session: Session, store: VectorStore, test: AptitudeTest) -> TrainingData:
    matrix = evaluation_matrix(session, store)
    row = {int(q): r for r, q in enumerate(matrix.query_ids)}
    width = max(len(t.items) for t in test.tasks)
    items = np.full((len(matrix.model_ids), len(test.tasks), width), np.nan)
    item_rows = np.zeros(len(matrix.query_ids), dtype=bool)
    for t, task in enumerate(test.tasks):
        for i, item in enumerate(task.items):
            if item.query_id in row:
                items[:, t, i] = matrix.outcomes[row[item.query_id]]
                item_rows[row[item.query_id]] = True
    external = dict(session.execute(select(EvalQuery.id, EvalQuery.external_id)).all())
    validation = np.array(
        [
            r
            for r, q in enumerate(matrix.query_ids)
            if is_test(str(external[int(q)]), VALIDATION_SEED, VALIDATION_SHARE)
        ],
        np.int64,
    )
    known = ~np.isnan(matrix.outcomes)
    digest = hashlib.sha256(
        f"{test.version}|{matrix.query_ids.tolist()}|{matrix.model_ids}|{int(known.sum())}|"
        f"{float(np.nansum(matrix.outcomes)):.6f}".encode()
    ).hexdigest()
    beyond_items = (~np.isnan(matrix.outcomes[~item_rows])).sum(axis=0).astype(np.int64)
    return TrainingData(matrix, items, [t.description for t in test.tasks], validation, digest, beyond_items)


def train_checkpoint(
    session: Session,
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    config: ModelSatConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> RerankerCheckpoint:
    """Trains the scorer and the per-model heads on every active model's records; the new checkpoint is stored
    but not activated."""
    test = current_test(session)
    if test is None:
        raise NotFoundError("no aptitude test: run `capprof aptitude build` first")
    data = training_data(session, store, test)
    config = config or ModelSatConfig()
    # The scorer learns from the models with outcomes beyond the aptitude items; a model known from its items alone
    # is scored zero-shot from its aptitude vector (its head still learns from the items), the state the onboarding
    # sweep measures. With no such model at all, it learns from every model.
    learners = data.records_beyond_items > 0
    if not learners.any():
        learners[:] = True
    sat, metrics = train_model_sat(
        data.matrix.vectors,
        data.matrix.outcomes[:, learners],
        data.item_outcomes[learners],
        embedder.embed(data.task_texts),
        config,
        device=settings.device,
        log=log,
        validation_rows=data.validation_rows,
    )
    # The heads see the same records as the scorer: never the validation rows, where presets and the
    # calibration of the final P(correct) are fitted.
    fit_rows = np.setdiff1d(np.arange(len(data.matrix.query_ids)), data.validation_rows)
    heads = train_heads(
        data.matrix.vectors[fit_rows],
        data.matrix.outcomes[fit_rows],
        head_keys(data.matrix.model_ids),
        placed=settings.difficulty_adjustment,
    )
    sat.heads = heads
    validation = data.matrix.vectors[data.validation_rows], data.matrix.outcomes[data.validation_rows]
    metrics |= {f"heads_validation_{k}": v for k, v in _heads_figures(heads, *validation).items()}
    metrics["heads"] = float((heads.records > 0).sum())
    version = (session.scalar(select(func.max(RerankerCheckpoint.version))) or 0) + 1
    path = settings.checkpoint_dir.resolve() / f"model_sat_v{version}.pt"
    sat.save(path, {"version": version, "aptitude_test_version": test.version, "fingerprint": data.fingerprint})
    checkpoint = RerankerCheckpoint(
        version=version,
        path=str(path),
        weights=path.read_bytes(),  # in the database too: replicas without this disk load it from there
        aptitude_test_id=test.id,
        data_fingerprint=data.fingerprint,
        metrics=metrics,
        training_records={
            str(m): int(n) for m, n in zip(data.matrix.model_ids, data.records_beyond_items, strict=True)
        },
        config=asdict(config),
        active=False,
    )
    session.add(checkpoint)
    session.flush()
    return checkpoint


def activate(session: Session, version: int) -> RerankerCheckpoint:
    checkpoint = get_checkpoint(session, version)
    if checkpoint.weights is None and not Path(checkpoint.path).exists():
        raise NotFoundError(f"version: the weights of v{version} are missing at {checkpoint.path}")
    session.execute(update(RerankerCheckpoint).values(active=RerankerCheckpoint.version == version))
    session.refresh(checkpoint)
    bump_generation(session, RERANKER)
    return checkpoint


def evaluate_checkpoint(session: Session, store: VectorStore, settings: Settings, version: int) -> dict[str, Any]:
    """Calibration error and top-1 accuracy on the held-out validation queries, recomputed from the database."""
    checkpoint = get_checkpoint(session, version)
    test = session.get(AptitudeTest, checkpoint.aptitude_test_id)
    assert test is not None
    data = training_data(session, store, test)
    sat = (
        ModelSat.load(io.BytesIO(checkpoint.weights), settings.device)
        if checkpoint.weights is not None
        else ModelSat.load(Path(checkpoint.path), settings.device)
    )
    rows = data.validation_rows
    vectors, outcomes = data.matrix.vectors[rows], data.matrix.outcomes[rows]
    p = sat.predict(vectors, sat.embed_models(aptitude_vectors(data.item_outcomes)))
    result: dict[str, Any] = {"version": version, "validation_queries": len(rows), **_figures(p, outcomes)}
    if sat.heads is not None:
        heads = sat.heads.arranged(head_keys(data.matrix.model_ids))
        result |= {f"heads_{name}": value for name, value in _heads_figures(heads, vectors, outcomes).items()}
    return result | {
        "best_single_accuracy": float(np.nanmax(np.nanmean(outcomes, axis=0))),
        "data_changed_since_training": data.fingerprint != checkpoint.data_fingerprint,
    }


def _heads_figures(
    heads: ModelHeads, vectors: npt.NDArray[np.float32], outcomes: npt.NDArray[np.float64]
) -> dict[str, float]:
    """The per-model heads alone (in the columns of `outcomes`), over the models that have one."""
    return _figures(np.where(heads.records > 0, heads.predict(vectors), np.nan), outcomes)


def _figures(p: npt.NDArray[np.float64], outcomes: npt.NDArray[np.float64]) -> dict[str, float]:
    """Calibration error over the known (query, model) pairs, and the accuracy of each query's top model."""
    known = ~np.isnan(outcomes) & ~np.isnan(p)
    chosen = np.where(np.isnan(p), -np.inf, p).argmax(axis=1)
    return {
        "ece": expected_calibration_error(p[known], outcomes[known]),
        "top1_accuracy": float(np.nanmean(outcomes[np.arange(len(p)), chosen])),
    }
