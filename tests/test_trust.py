"""Routing you can trust, on arrays: ranking by final utility, evidence-weighted estimates, presets, baselines."""

import numpy as np
import pytest

from profiling.evaluation import (
    CurvePoint,
    aiq,
    best_single,
    choose_reranked,
    common_accuracy,
    gap_recovery,
    plain_knn,
)
from profiling.model_profile import model_means
from profiling.model_sat import novelty_trust
from profiling.operating_points import choose_operating_points
from profiling.scoring import ModelCatalog, rank


def _catalog(n: int, prices: list[float] | None = None) -> ModelCatalog:
    price = np.array(prices if prices is not None else [1.0] * n)
    return ModelCatalog(
        names=tuple(f"m{i}" for i in range(n)),
        providers=(None,) * n,
        input_usd_per_mtok=price,
        output_usd_per_mtok=price,
        typical_output_tokens=np.full(n, 100.0),
        mean_cost_usd=np.full(n, np.nan),
    )


def test_the_order_is_by_final_utility_alone() -> None:
    # m0 was not re-ranked (no aptitude results) but has the best final estimate: it must come first
    p = np.array([[0.95, 0.40, 0.60]])
    costs = np.array([[0.001, 0.003, 0.003]])
    ranked = rank(_catalog(3), p, costs, 0.0, np.ones((1, 3), bool), top_n=3)[0]
    assert [a.model for a in ranked] == ["m0", "m2", "m1"]


def test_the_offline_two_stage_choice_lets_stage_one_only_models_win() -> None:
    stage1 = np.array([[0.9, 0.5, 0.5]])
    stage2 = np.array([[0.0, 0.6, 0.7]])
    costs = np.full((1, 3), 0.001)
    rerankable = np.array([False, True, True])  # m0 has no aptitude results
    choice = choose_reranked(stage1, stage2, costs, 0.0, top_k=2, weight=0.5, rerankable=rerankable)
    assert choice.tolist() == [0]


def test_an_unknown_cost_is_imputed_and_flagged() -> None:
    p = np.array([[0.8, 0.7, 0.6]])
    costs = np.array([[np.nan, 0.002, 0.004]])
    ranked = rank(_catalog(3), p, costs, 0.0, np.ones((1, 3), bool), top_n=3)[0]
    unpriced = next(a for a in ranked if a.model == "m0")
    assert unpriced.cost_imputed and unpriced.cost_usd == pytest.approx(0.003)
    assert unpriced.utility == pytest.approx(0.8)
    assert not next(a for a in ranked if a.model == "m1").cost_imputed


def test_one_lucky_record_is_not_a_confident_mean() -> None:
    # model 0: one record, right; models 1 and 2: 100 records each at 0.6 and 0.5
    index = np.array([0] + [1] * 100 + [2] * 100)
    values = np.array([1.0] + [1.0] * 60 + [0.0] * 40 + [1.0] * 50 + [0.0] * 50)
    raw = model_means(index, values, 3)
    shrunk = model_means(index, values, 3, prior_strength=20)
    assert raw[0] == 1.0
    population = (1.0 + 0.6 + 0.5) / 3
    assert shrunk[0] == pytest.approx((1.0 + 20 * population) / 21)
    assert shrunk[0] < 0.75
    assert abs(shrunk[1] - 0.6) < 0.02  # plenty of evidence: barely moved


def test_the_scorer_is_trusted_less_far_from_its_training_models() -> None:
    reference = np.array([[0.5, 0.5, 0.5], [0.7, 0.6, 0.8]], np.float32)
    models = np.array([[0.7, 0.6, 0.8], [0.75, 0.65, 0.85], [1.0, 1.0, 1.0]], np.float32)
    trust = novelty_trust(models, reference, scale=0.1)
    assert trust[0] == pytest.approx(1.0)
    assert trust[2] < trust[1] < 1.0
    assert trust[1] == pytest.approx(np.exp(-((0.05 / 0.1) ** 2)), rel=1e-4)


def test_presets_are_monotone_in_cost() -> None:
    curve = [
        CurvePoint(0.0, 0.80, 0.010),
        CurvePoint(0.1, 0.805, 0.009),
        CurvePoint(0.5, 0.797, 0.004),
        CurvePoint(1.0, 0.790, 0.003),
        CurvePoint(5.0, 0.760, 0.001),
        CurvePoint(10.0, 0.700, 0.0005),
    ]
    chosen = choose_operating_points(curve)
    assert chosen["quality"].cost_weight == 0.1  # the best accuracy
    assert chosen["balanced"].cost_weight == 0.5  # cheapest within 1 point of 0.805
    assert chosen["economy"].cost_weight == 5.0  # cheapest within 5 points
    costs = [chosen[n].cost_per_query for n in ("economy", "balanced", "quality")]
    assert costs == sorted(costs)


def test_best_single_is_chosen_on_queries_every_model_answered() -> None:
    # model 0 answered everything (0.9 overall, easy rows included); model 1 (new) only the five hard aptitude
    # rows, where it beats model 0 (0.6 vs 0.4): compared on the same rows, model 1 is the better model
    easy = [[1.0, np.nan]] * 15
    hard = [[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    train = np.array(easy + hard)
    assert np.nanmean(train, axis=0).argmax() == 0  # each model's own mean mixes different queries
    assert common_accuracy(train).tolist() == pytest.approx([0.4, 0.6])
    model, point = best_single(common_accuracy(train), np.array([[0.0, 1.0]]), np.ones((1, 2)))
    assert model == 1 and point.accuracy == 1.0
    assert common_accuracy(np.array([[1.0, np.nan], [np.nan, 0.0]])).tolist() == [1.0, 0.0]  # nothing shared


def test_plain_knn_averages_the_nearest_training_queries() -> None:
    train = np.eye(3, dtype=np.float32)
    outcomes = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, 1.0]])
    costs = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    query = np.array([[0.8, 0.6, 0.0]], np.float32)
    p, c = plain_knn(query, train, outcomes, costs, k=2)
    assert p[0].tolist() == pytest.approx([0.8 / 1.4 * 1 + 0.6 / 1.4 * 0, 0.6 / 1.4])
    assert c[0].tolist() == pytest.approx([(0.8 * 1 + 0.6 * 3) / 1.4, (0.8 * 2 + 0.6 * 4) / 1.4])


def test_aiq_is_the_mean_of_the_cost_quality_hull() -> None:
    points = [CurvePoint(0, 0.6, 1.0), CurvePoint(1, 0.8, 3.0), CurvePoint(2, 0.7, 2.5)]  # the last is dominated
    # hull: 0.6 at cost 1 rising linearly to 0.8 at cost 3; flat at 0.6 below cost 1 over [0, 4]: flat 0.8 above 3
    expected = (1 * 0.6 + 2 * 0.7 + 1 * 0.8) / 4
    assert aiq(points, 0.0, 4.0) == pytest.approx(expected, abs=1e-3)


def test_gap_recovery_matches_a_hand_computed_router() -> None:
    # weak 0.6, strong 0.8; one operating point: 40% of calls to the strong model recovers 0.75 of the gap
    recovery = gap_recovery([0.4], [0.75], weak_accuracy=0.6, strong_accuracy=0.8)
    # hull (0,0) -> (0.4, 0.75) -> (1, 1): area = 0.4*0.375 + 0.6*(0.875)
    assert recovery.apgr == pytest.approx(0.4 * 0.375 + 0.6 * 0.875, abs=1e-3)
    assert recovery.cpt50 == pytest.approx(0.4 * 0.5 / 0.75)
    assert recovery.cpt80 == pytest.approx(0.4 + 0.6 * (0.8 - 0.75) / 0.25)
