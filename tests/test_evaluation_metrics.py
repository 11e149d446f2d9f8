"""Evaluation metrics on small hand-made data where the right answers are known."""

import numpy as np
import pytest

from profiling.evaluation import (
    CurvePoint,
    Point,
    best_single,
    choose,
    cost_at_accuracy,
    curve,
    is_test,
    oracle,
    random_router,
    realised,
)

# 4 queries x 3 models: A is cheap and right on half, B is dear and right on three, C right once.
OUTCOMES = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 1], [0, 0, 0]], float)
COSTS = np.array([[1, 10, 2], [1, 10, 2], [1, 10, 2], [1, 10, 2]], float) / 1000


def test_oracle_takes_the_cheapest_correct_model() -> None:
    point = oracle(OUTCOMES, COSTS)
    assert point.accuracy == 0.75  # query 4 has no correct model
    # query 1: A (1), query 2: B (10), query 3: A (1), query 4: none -> cheapest (1)
    assert point.cost_per_query == pytest.approx((1 + 10 + 1 + 1) / 4 / 1000)


def test_random_is_the_expectation_over_models() -> None:
    point = random_router(OUTCOMES, COSTS)
    assert point.accuracy == pytest.approx(OUTCOMES.mean())
    assert point.cost_per_query == pytest.approx((1 + 10 + 2) / 3 / 1000)


def test_best_single_is_chosen_on_training_accuracy_not_test() -> None:
    train_accuracy = np.array([0.9, 0.5, 0.1])  # training says A, although B is better on test
    model, point = best_single(train_accuracy, OUTCOMES, COSTS)
    assert model == 0
    assert point == Point(0.5, pytest.approx(0.001))


def test_choose_trades_quality_for_cost_and_breaks_ties_by_cost() -> None:
    p = np.array([[0.6, 0.9, 0.6]])
    est = np.array([[0.001, 0.01, 0.002]])
    assert choose(p, est, 0.0)[0] == 1
    assert choose(p, est, 0.1)[0] == 0  # 0.9 - 1.0 < 0.6 - 0.1
    tie = np.array([[0.5, 0.5, 0.5]])
    assert choose(tie, est, 0.0)[0] == 0


def test_curve_measures_actual_outcomes_and_costs() -> None:
    p = np.tile([0.5, 0.8, 0.1], (4, 1))
    points = curve(p, COSTS, OUTCOMES, COSTS, lambdas=[0.0, 10.0])
    assert points[0] == CurvePoint(0.0, 0.75, pytest.approx(0.01))
    assert points[1] == CurvePoint(10.0, 0.5, pytest.approx(0.001))
    assert realised(OUTCOMES, COSTS, np.array([2, 2, 2, 2])) == Point(0.25, pytest.approx(0.002))


def test_cost_at_accuracy_is_the_cheapest_point_reaching_it() -> None:
    points = [CurvePoint(0, 0.80, 0.010), CurvePoint(1, 0.76, 0.004), CurvePoint(2, 0.70, 0.001)]
    assert cost_at_accuracy(points, 0.75) == 0.004
    assert cost_at_accuracy(points, 0.80) == 0.010
    assert cost_at_accuracy(points, 0.81) is None


def test_split_is_deterministic_and_near_the_share() -> None:
    ids = [f"q{i}" for i in range(5000)]
    first = [is_test(i, seed=7) for i in ids]
    assert first == [is_test(i, seed=7) for i in ids]
    assert first != [is_test(i, seed=8) for i in ids]
    assert 0.27 < np.mean(first) < 0.33


class HashEmbedder:
    """Deterministic pseudo-random unit vectors per text, counting what it is asked to embed."""

    name = "hash-test"
    dimension = 32

    def __init__(self) -> None:
        self.embedded = 0

    def embed(self, texts):  # type: ignore[no-untyped-def]
        import hashlib

        self.embedded += len(texts)
        rows = [
            np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big")).normal(size=32)
            for t in texts
        ]
        vectors = np.asarray(rows, np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_evaluate_is_deterministic_and_reuses_cached_embeddings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from profiling.embedding_cache import CachedEmbedder
    from service.jobs.evaluate import evaluate
    from service.settings import Settings
    from tests.conftest import shared_family, small_family

    data = tmp_path / "data"
    small_family(data, shared_family("zeroeval"), 300)
    inner = HashEmbedder()
    reports = []
    for run in range(2):
        embedder = CachedEmbedder(inner, tmp_path / "cache")  # a fresh process would reopen the cache like this
        settings = Settings(data_dir=tmp_path / f"run{run}")
        evaluate(
            data, "zeroeval", tmp_path / f"out{run}", settings, embedder, seed=3, log=lambda _: None, progress=False
        )
        report = json.loads((tmp_path / f"out{run}" / "report.json").read_text())
        report["sat_calibration"].pop("train_seconds")  # a measured time, the one thing allowed to differ
        reports.append(report)
        if run == 0:
            first_run_embedded = inner.embedded
    assert reports[0] == reports[1]
    assert first_run_embedded > 300
    assert inner.embedded == first_run_embedded, "the second run embedded again"
    assert reports[0]["n_train"] + reports[0]["n_test"] + reports[0]["n_test_dropped"] == 300


def test_test_ids_choose_the_test_set_and_incomplete_queries_are_dropped(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from profiling.dataset import read_family
    from service.jobs.evaluate import EvaluationError, split_family
    from tests.conftest import csv_rows, shared_family, small_family

    folder = small_family(tmp_path, shared_family("zeroeval"), 40)
    family = read_family(folder)
    ids = [q.query_id for q in family.queries]
    split = split_family(family, seed=0, test_ids=set(ids[:10]))
    assert sorted(family.queries[i].query_id for i in split.test_rows) == sorted(ids[:10])
    assert len(split.train_rows) == 30 and split.dropped_test == 0

    rows = csv_rows(folder / "outcomes.csv.gz")
    without = [o for o in rows if not (o["query_id"] == ids[0] and o["model"] == rows[0]["model"])]
    import csv
    import gzip

    with gzip.open(folder / "outcomes.csv.gz", "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(without)
    split = split_family(read_family(folder), seed=0, test_ids=set(ids[:10]))
    assert split.dropped_test == 1 and len(split.test_rows) == 9
    assert ids[0] not in {family.queries[i].query_id for i in split.train_rows}, "a dropped test query must not train"

    with pytest.raises(EvaluationError, match="--test-ids"):
        split_family(family, seed=0, test_ids={"not-a-query"})


def test_held_out_choices_are_each_model_then_distinct_random_groups() -> None:
    from service.jobs.onboarding import held_out_choices

    models = [f"m{i}" for i in range(6)]
    choices = held_out_choices(models, random_groups=5, seed=1)
    assert choices[:6] == [[m] for m in models]
    groups = choices[6:]
    assert len(groups) == 5 and len({tuple(g) for g in groups}) == 5
    assert all(2 <= len(g) <= 4 and len(set(g)) == len(g) for g in groups)
    assert choices == held_out_choices(models, random_groups=5, seed=1)
    assert held_out_choices(["a", "b", "c"], random_groups=3, seed=0) == [["a"], ["b"], ["c"]]  # two must stay


def test_onboarding_sweep_reports_every_choice_against_full_information(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import csv
    import gzip

    from profiling.dataset import read_family
    from profiling.embedding_cache import CachedEmbedder
    from profiling.evaluation import oracle_choice
    from service.jobs.evaluate import split_family
    from service.jobs.onboarding import onboarding_sweep
    from service.settings import Settings
    from tests.conftest import csv_rows, shared_family, small_family

    folder = small_family(tmp_path / "data", shared_family("zeroeval"), 240)
    keep = [m["model"] for m in csv_rows(folder / "models.csv")][:4]
    for name, rows in (
        ("models.csv", [m for m in csv_rows(folder / "models.csv") if m["model"] in keep]),
        ("outcomes.csv.gz", [o for o in csv_rows(folder / "outcomes.csv.gz") if o["model"] in keep]),
    ):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(folder / name, "wt", newline="") as handle:  # type: ignore[operator]
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    embedder = CachedEmbedder(HashEmbedder(), tmp_path / "cache")
    settings = Settings(data_dir=tmp_path / "run")
    report = onboarding_sweep(
        tmp_path / "data", "zeroeval", tmp_path / "out", settings, embedder, seed=0, random_groups=2,
        log=lambda _: None, progress=False,
    )  # fmt: skip
    choices = [row["new_models"] for row in report["choices"]]
    assert choices[:4] == [[m] for m in keep] and len(choices) == 6
    split = split_family(read_family(folder), 0, None)
    outcomes, costs = split.outcomes[split.test_rows], split.costs[split.test_rows]
    oracle = oracle_choice(outcomes, costs)
    for row in report["choices"]:
        columns = [split.models.index(m) for m in row["new_models"]]
        assert row["oracle_share_to_new_models"] == pytest.approx(np.isin(oracle, columns).mean())
        assert row["gap_points"] == pytest.approx(
            (report["full_information_accuracy"] - row["aptitude_only_accuracy"]) * 100
        )
        assert 0.0 <= row["share_routed_to_new_models"] <= 1.0
    gaps = [row["gap_points"] for row in report["choices"]]
    assert report["mean_gap_points"] == pytest.approx(np.mean(gaps))
    assert report["worst_gap_points"] == max(gaps)
    assert "worst" in (tmp_path / "out" / "onboarding.md").read_text()
