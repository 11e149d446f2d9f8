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
from profiling.model_profile import (
    ProfileSums,
    difficulty_adjusted_profile,
    difficulty_shift,
    model_means,
    shrunk_means,
)
from profiling.model_sat import evidence_trust, novelty_trust
from profiling.operating_points import choose_operating_points
from profiling.scoring import ModelCatalog, blend, rank


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


def test_the_scorer_reorders_re_ranked_models_but_moves_no_level() -> None:
    """The scorer rates every re-ranked model 0.3 lower than stage 1 and m2 better than m1: only the order of m1
    and m2 may change, never their level against m0 (stage 1 only) or m3 (a model the scorer is not trusted on)."""
    stage1 = np.array([[0.70, 0.66, 0.64, 0.62]])
    stage2 = np.array([[0.0, 0.30, 0.40, 0.10]])
    rerank = np.array([[False, True, True, True]])
    shares = np.array([0.0, 0.5, 0.5, 0.0])
    p = blend(stage1, stage2, rerank, shares)
    assert p[0, 0] == stage1[0, 0] and p[0, 3] == stage1[0, 3]
    assert p[0, 2] > p[0, 1]  # the scorer's view of this query: m2 suits it better than m1
    assert p[0, 1] + p[0, 2] == pytest.approx(stage1[0, 1] + stage1[0, 2])  # centred: no shift for the pair
    level_only = blend(stage1, stage1 - 0.3, rerank, shares)  # the scorer lowers every model alike
    np.testing.assert_allclose(level_only, stage1)


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


def test_a_model_known_from_queries_easy_for_it_is_put_on_everyone_s_queries() -> None:
    """Outcomes drawn from a Rasch model: 'new' answered only the queries of middling difficulty (like aptitude
    items, chosen because models split on them), where it looks far better than over all queries."""
    rng = np.random.default_rng(0)
    ability = np.array([-1.5, -0.5, 0.0, 0.5, 1.5, 1.0])
    difficulty = rng.normal(0.0, 2.0, 4000)
    truth = 1.0 / (1.0 + np.exp(difficulty[:, None] - ability[None, :]))
    outcomes = (rng.random(truth.shape) < truth).astype(np.float64)
    items = np.abs(difficulty) < 0.5  # about half the models fail these
    outcomes[~items, 5] = np.nan  # the new model answered only the items
    raw_mean = np.nanmean(outcomes[:, 5])
    true_mean = truth[:, 5].mean()
    assert raw_mean - true_mean > 0.05  # the items flatter it
    shift = difficulty_shift(outcomes)
    assert abs(raw_mean + shift[5] - true_mean) < 0.3 * (raw_mean - true_mean)
    np.testing.assert_allclose(shift[:5], 0.0, atol=1e-12)  # evaluated on every query: nothing to move


@pytest.mark.parametrize("score", [0.0, 1.0])
def test_one_record_stays_near_the_population_whichever_way_it_went(score: float) -> None:
    """The difficulty shift of a model known from one record moves it by that record's share only: one wrong
    answer to a hard query once put a model at 1.0 everywhere, and one right answer near 0."""
    rng = np.random.default_rng(1)
    known = 12  # enough that the thin model's own mean barely moves the population's
    ability = np.linspace(-1.0, 1.0, known)
    truth = 1.0 / (1.0 + np.exp(rng.normal(0.0, 2.0, 500)[:, None] - ability[None, :]))
    outcomes = np.column_stack([(rng.random(truth.shape) < truth).astype(np.float64), np.full(500, np.nan)])
    outcomes[0, known] = score
    counts = (~np.isnan(outcomes)).sum(axis=0).astype(np.float64)
    totals = np.nansum(outcomes, axis=0)
    means = shrunk_means(totals, counts, 20.0)
    dimensions = 4
    sums = ProfileSums(
        weighted_sum=np.tile(totals[:, None] / dimensions, (1, dimensions)),
        support=np.tile(counts[:, None] / dimensions, (1, dimensions)),
        count=np.tile(counts[:, None].astype(np.int64), (1, dimensions)),
    )
    shift = difficulty_shift(outcomes)
    adjusted, profile = difficulty_adjusted_profile(sums, means, counts, shift, 20.0, 10.0)
    population = float(np.mean(totals[:known] / counts[:known]))
    assert abs(adjusted[known] - population) < 0.08  # before: 0.79 after a wrong answer, 0.38 after a right one
    assert np.all(np.abs(profile[known] - population) < 0.12)
    np.testing.assert_allclose(adjusted[:known], means[:known], atol=0.01)  # ample evidence: as before


def test_a_right_answer_never_ranks_below_a_wrong_one() -> None:
    rng = np.random.default_rng(2)
    truth = 1.0 / (1.0 + np.exp(rng.normal(0.0, 2.0, 300)[:, None] - np.array([-0.5, 0.5])[None, :]))
    outcomes = np.column_stack([(rng.random(truth.shape) < truth).astype(np.float64), np.full((300, 2), np.nan)])
    hard = int(np.argmin(np.nanmean(outcomes[:, :2], axis=1)))  # a query both known models got wrong
    outcomes[hard, 2], outcomes[hard, 3] = 1.0, 0.0
    counts = (~np.isnan(outcomes)).sum(axis=0).astype(np.float64)
    totals = np.nansum(outcomes, axis=0)
    sums = ProfileSums(totals[:, None], counts[:, None], counts[:, None].astype(np.int64))
    adjusted, _ = difficulty_adjusted_profile(
        sums, shrunk_means(totals, counts, 20.0), counts, difficulty_shift(outcomes), 20.0, 10.0
    )
    assert adjusted[2] > adjusted[3]


def test_rank_never_returns_a_model_outside_the_mask() -> None:
    p = np.array([[0.9, 0.8, 0.5]])
    costs = np.array([[0.001, 0.001, np.inf]])  # the allowed model's utility is -inf
    ranked = rank(_catalog(3), p, costs, 1.0, np.array([[False, False, True]]), top_n=1)[0]
    assert [a.model for a in ranked] == ["m2"]


def test_the_scorer_is_trusted_less_far_from_its_training_models() -> None:
    reference = np.array([[0.5, 0.5, 0.5], [0.7, 0.6, 0.8]], np.float32)
    models = np.array([[0.7, 0.6, 0.8], [0.75, 0.65, 0.85], [1.0, 1.0, 1.0]], np.float32)
    trust = novelty_trust(models, reference, scale=0.1)
    assert trust[0] == pytest.approx(1.0)
    assert trust[2] < trust[1] < 1.0
    assert trust[1] == pytest.approx(np.exp(-((0.05 / 0.1) ** 2)), rel=1e-4)


def test_the_scorer_weighs_in_only_for_models_it_was_trained_on() -> None:
    trust = evidence_trust(np.array([0, 100, 5000]), pseudo_count=100)
    assert trust[0] == 0.0  # zero-shot: stage 1 alone
    assert trust[1] == pytest.approx(0.5)
    assert 0.98 < trust[2] < 1.0
    assert evidence_trust(np.array([0, 3]), pseudo_count=0).tolist() == [0.0, 1.0]


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


def _toy_profiler(min_similarity: dict[str, float] | None = None):  # type: ignore[no-untyped-def]
    from profiling.query_profile import DimensionCatalog, ExemplarSet, QueryProfiler
    from profiling.vector_index import VectorIndex

    # columns: 0 coding, 1 reasoning (capabilities); 2 law, 3 history, 4 everyday topics (catch-all domain)
    catalog = DimensionCatalog(
        (10, 11, 20, 21, 22),
        ("coding", "reasoning", "law", "history", "everyday topics"),
        ("capability", "capability", "domain", "domain", "domain"),
        (False, False, False, False, True),
    )
    eye = np.eye(8, dtype=np.float32)
    capability = ExemplarSet(VectorIndex(np.array([1, 2]), eye[[0, 1]]), np.array([0, 1]))
    domain = ExemplarSet(VectorIndex(np.array([3, 4, 5]), eye[[2, 3, 4]]), np.array([2, 3, 4]))
    return QueryProfiler(catalog, {"capability": capability, "domain": domain}, 2, 0.7, 2, min_similarity)


def _unit(*parts: tuple[int, float]) -> np.ndarray:
    v = np.zeros(8, np.float32)
    for i, x in parts:
        v[i] = x
    return v / np.linalg.norm(v)


def test_a_query_nearest_the_catch_all_gets_no_domain() -> None:
    profiler = _toy_profiler()
    queries = np.stack([_unit((0, 1), (2, 0.8)), _unit((1, 1), (4, 0.9), (3, 0.3))])
    weights, votes, nearest = profiler.profile_vectors(queries)
    legal, everyday = (profiler.describe(weights[i], votes[i], float(nearest[i])) for i in range(2))
    assert [d.name for d in legal.domains] == ["law"] and legal.capabilities[0].name == "coding"
    assert everyday.domains == () and everyday.capabilities[0].name == "reasoning"
    assert weights[:, 4].sum() == 0  # the catch-all never carries weight


def test_a_query_far_from_every_domain_gets_none() -> None:
    far = np.stack([_unit((0, 1), (2, 0.1), (6, 1.0))])  # barely related to law, nothing else
    loose, strict = _toy_profiler(), _toy_profiler({"domain": 0.25})
    assert [d.name for d in loose.describe(*_row(loose, far)).domains] == ["law"]
    assert strict.describe(*_row(strict, far)).domains == ()
    assert strict.describe(*_row(strict, far)).capabilities[0].name == "coding"


def _row(profiler, vectors):  # type: ignore[no-untyped-def]
    weights, votes, nearest = profiler.profile_vectors(vectors)
    return weights[0], votes[0], float(nearest[0])


def test_probe_counts_agreement_and_none() -> None:
    from service.jobs.probe import ProbeItem, probe

    profiler = _toy_profiler({"domain": 0.25})
    items = [
        ProbeItem("a contract question", "coding", "law"),  # capability wrong on purpose below
        ProbeItem("a chat", "reasoning", "none"),
        ProbeItem("a medical question", "reasoning", "health"),  # health is not loaded: counts as out of domain
    ]
    vectors = np.stack([_unit((1, 1), (2, 0.9)), _unit((1, 1), (4, 1.0)), _unit((1, 1), (3, 0.9))])
    report = probe(profiler, vectors, items, {"law": {"law"}, "history": {"history"}})
    assert report.capability_top1 == pytest.approx(2 / 3)
    assert report.confusions == {"coding -> reasoning": 1}
    assert (report.in_domain_items, report.domain_top1, report.in_domain_given_none) == (1, 1.0, 0.0)
    assert (report.out_of_domain_items, report.none_recognised) == (2, 0.5)  # the medical one was called history


def _crowded_capabilities():  # type: ignore[no-untyped-def]
    """Six coding exemplars near a query and two knowledge exemplars nearer still (8-d unit vectors)."""
    from profiling.query_profile import DimensionCatalog, ExemplarSet
    from profiling.vector_index import VectorIndex

    catalog = DimensionCatalog((10, 11), ("coding", "knowledge retrieval"), ("capability", "capability"))
    rng = np.random.default_rng(0)
    coding = [_unit((0, 1), (5, 0.9), (6, rng.normal(0, 0.3)), (7, rng.normal(0, 0.3))) for _ in range(6)]
    knowledge = [_unit((1, 1), (5, 0.9), (6, rng.normal(0, 0.3)), (7, rng.normal(0, 0.3))) for _ in range(2)]
    vectors, columns = np.stack(coding + knowledge), np.array([0] * 6 + [1] * 2)
    return catalog, ExemplarSet(VectorIndex(np.arange(8), vectors), columns), vectors, columns


def test_the_capability_classifier_weighs_what_separates_capabilities_not_how_many_exemplars_are_near() -> None:
    from profiling.query_profile import ExemplarClassifier, QueryProfiler

    catalog, exemplars, vectors, columns = _crowded_capabilities()
    query = np.stack([_unit((0, 0.5), (1, 1), (5, 1))])  # on knowledge's side, but most of its neighbours are coding
    assert (query @ vectors.T).argmax() >= 6  # the nearest exemplar is a knowledge one
    summed = QueryProfiler(catalog, {"capability": exemplars}, 6, 0.7, 2)
    classifier = ExemplarClassifier.fit(vectors, columns, 10.0)
    assert classifier is not None
    classified = QueryProfiler(catalog, {"capability": exemplars}, 6, 0.7, 2, None, {"capability": classifier})
    assert summed.describe(*_row(summed, query)).capabilities[0].name == "coding"
    top = classified.describe(*_row(classified, query)).capabilities
    assert top[0].name == "knowledge retrieval" and top[0].weight > top[1].weight
    assert top[0].vote == pytest.approx(summed.describe(*_row(summed, query)).capabilities[1].vote)  # votes unchanged
    # below the capability similarity floor the classifier gives no capability either
    floored = QueryProfiler(
        catalog, {"capability": exemplars}, 6, 0.7, 2, {"capability": 0.99}, {"capability": classifier}
    )
    assert floored.describe(*_row(floored, query)).capabilities == ()


def test_a_single_capability_needs_no_classifier() -> None:
    from profiling.query_profile import ExemplarClassifier

    _, _, vectors, _ = _crowded_capabilities()
    assert ExemplarClassifier.fit(vectors, np.zeros(len(vectors), np.int64), 10.0) is None


def test_the_service_ranks_capabilities_with_the_classifier_unless_it_is_turned_off() -> None:
    from profiling.vector_index import VectorIndex
    from service.settings import Settings
    from service.store.readers import build_profiler

    catalog, _, vectors, _ = _crowded_capabilities()
    points, dimension_ids = VectorIndex(np.arange(8), vectors), np.array([10] * 6 + [11] * 2)
    query = np.stack([_unit((0, 0.5), (1, 1), (5, 1))])
    names = {}
    for c in (10.0, 0.0):
        settings = Settings(capability_classifier_c=c, exemplar_top_k=6, capability_min_similarity=0.0)
        profiler = build_profiler(catalog, points, dimension_ids, None, settings)  # type: ignore[arg-type]
        names[c] = profiler.describe(*_row(profiler, query)).capabilities[0].name
    assert names == {10.0: "knowledge retrieval", 0.0: "coding"}


@pytest.mark.parametrize("classes", [2, 5])
def test_the_capability_classifier_gives_scikit_learns_probabilities(classes: int) -> None:
    from sklearn.linear_model import LogisticRegression

    from profiling.query_profile import ExemplarClassifier

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(200, 16)).astype(np.float32)
    columns = rng.integers(0, classes, 200) * 3 + 1  # catalog columns need not start at 0 or be adjacent
    classifier = ExemplarClassifier.fit(vectors, columns, 10.0)
    reference = LogisticRegression(C=10.0, max_iter=1000).fit(vectors.astype(np.float64), columns)
    assert classifier is not None and classifier.columns.tolist() == reference.classes_.tolist()
    np.testing.assert_allclose(classifier.probabilities(vectors[:20]), reference.predict_proba(vectors[:20]), atol=1e-9)
