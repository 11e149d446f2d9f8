"""`capprof presets calibrate`: the deployment's operating points and the calibration of its final P(correct),
from its own validation queries.

The validation queries are the re-ranker's (never fitted by Model-SAT). Stage 1 estimates them with the live
routing state, each query's own outcome left out of its kNN neighbours; the realised accuracy and cost of each
lambda's choices give the curve the presets are picked from (profiling/operating_points.py). Platt scaling of
the final P(correct) is fitted on the same queries first, so the presets are picked with calibrated estimates,
as the service will route with them.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from profiling.calibration import calibrate, fit_probability_calibration
from profiling.evaluation import CurvePoint, choose, curve_of, is_test, reranked_p_correct
from profiling.model_sat import expected_calibration_error
from profiling.operating_points import choose_operating_points
from service.registry.checkpoints import VALIDATION_SEED, VALIDATION_SHARE
from service.routing.engine import RoutingEngine
from service.store.generation import PRESETS, bump_generation
from service.store.orm import EvalQuery, OperatingPoint, ProbabilityCalibration
from service.store.readers import FINAL_P_CORRECT, load_records, outcome_matrix
from service.store.vector_store import EVAL_QUERIES, VectorStore

MIN_VALIDATION_QUERIES = 20
MAX_VALIDATION_QUERIES = 5000


class CalibrationError(ValueError):
    """Too little validation data to calibrate on."""


def calibrate_presets(
    session: Session, store: VectorStore, router: RoutingEngine, min_queries: int = MIN_VALIDATION_QUERIES
) -> dict[str, CurvePoint]:
    """Computes the validation curve with `router`'s current state and stores the presets (replacing old ones)."""
    state = router.state
    index, _ = store.snapshot(EVAL_QUERIES)
    external = dict(session.execute(select(EvalQuery.id, EvalQuery.external_id)).all())
    row_of = {int(q): r for r, q in enumerate(state.query_ids)}
    validation = [
        r
        for r, q in enumerate(index.ids)
        if int(q) in row_of and is_test(str(external.get(int(q), q)), VALIDATION_SEED, VALIDATION_SHARE)
    ][:MAX_VALIDATION_QUERIES]
    query_ids = index.ids[validation]
    records = load_records(session, ("import", "api"))
    outcomes = outcome_matrix(records, query_ids, state.model_ids)
    actual_costs = outcome_matrix(replace(records, score=records.cost), query_ids, state.model_ids)
    # A query counts where two or more active models have outcomes (families of models are evaluated on their
    # own benchmarks); on it, the choice is made among those models, so every choice has a real outcome.
    comparable = (~np.isnan(outcomes)).sum(axis=1) >= 2
    if comparable.sum() < min_queries:
        raise CalibrationError(
            f"only {int(comparable.sum())} validation queries have outcomes of two or more active models "
            f"(at least {min_queries} needed): import evaluation data first"
        )
    keep = np.flatnonzero(comparable)
    vectors = index.vectors[validation][keep]
    text_chars = dict(session.execute(select(EvalQuery.id, EvalQuery.text)).all())
    chars = np.array([len(text_chars[int(q)]) for q in query_ids[keep]], np.float64)
    own_rows = np.array([row_of[int(q)] for q in query_ids[keep]], np.int64)
    est = router.estimate(vectors, chars, own_rows=own_rows, state=state)
    realised_costs = np.where(np.isnan(actual_costs[keep]), est.costs, actual_costs[keep])
    stage2 = state.stage2
    p_sat = stage2.scorer.predict(vectors, stage2.model_embeddings) if stage2 is not None else None

    def final_p(lam: float) -> np.ndarray:
        if stage2 is None or p_sat is None:
            return est.p_correct
        weight = router.reranker_shares(stage2)
        top_k = router.settings.reranker_top_k
        return reranked_p_correct(est.p_correct, p_sat, est.costs, lam, top_k, weight, stage2.has_aptitude)

    known = outcomes[keep]
    evaluated = ~np.isnan(known)
    raw = final_p(0.0)
    params = fit_probability_calibration(raw, known)
    store_probability_calibration(session, params, raw, known)

    def chooser(lam: float) -> np.ndarray:
        return choose(np.where(evaluated, calibrate(final_p(lam), params), -np.inf), est.costs, lam)

    curve = curve_of(chooser, np.nan_to_num(known), realised_costs)
    chosen = choose_operating_points(curve)
    bump_generation(session, PRESETS)  # every replica routes with the new presets and calibration
    session.execute(delete(OperatingPoint))
    now = datetime.now(UTC)
    for name, point in chosen.items():
        session.add(
            OperatingPoint(
                name=name,
                cost_weight=point.cost_weight,
                validation_accuracy=point.accuracy,
                validation_cost_per_query=point.cost_per_query,
                validation_queries=len(keep),
                calibrated_at=now,
                curve=[asdict(p) for p in curve],
            )
        )
    session.flush()
    return chosen


def store_probability_calibration(
    session: Session, params: tuple[float, float], p: np.ndarray, outcomes: np.ndarray
) -> None:
    """Replaces the stored Platt scaling; the calibration errors are measured on the validation pairs."""
    known = ~np.isnan(outcomes)
    row = session.get(ProbabilityCalibration, FINAL_P_CORRECT) or ProbabilityCalibration(name=FINAL_P_CORRECT)
    row.scale, row.bias = params
    row.validation_pairs = int(known.sum())
    row.ece_before = expected_calibration_error(p[known], outcomes[known])
    row.ece_after = expected_calibration_error(calibrate(p, params)[known], outcomes[known])
    row.fitted_at = datetime.now(UTC)
    session.add(row)
