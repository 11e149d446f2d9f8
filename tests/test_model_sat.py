"""Model-SAT: the aptitude test, checkpoint round trip, zero-shot onboarding in the evaluation harness."""

from pathlib import Path

import numpy as np
import pytest

from profiling.aptitude import build_aptitude_test
from profiling.dataset import read_family
from profiling.embedding_cache import CachedEmbedder
from profiling.model_profile import difficulty_shift
from profiling.model_sat import ModelSat, ModelSatConfig, aptitude_vectors, train_model_sat
from service.jobs.evaluate import evaluate, split_family, training_family
from service.settings import Settings
from tests.conftest import shared_family


@pytest.fixture(scope="module")
def zeroeval_split():  # type: ignore[no-untyped-def]
    return split_family(read_family(shared_family("zeroeval")), seed=0, test_ids=None)


def test_aptitude_test_has_50_tasks_of_20_distinct_separating_items(zeroeval_split, embedder: CachedEmbedder) -> None:  # type: ignore[no-untyped-def]
    split = zeroeval_split
    train = split.train_rows
    texts = [split.family.queries[i].text for i in train]
    outcomes = split.outcomes[train]
    test = build_aptitude_test(texts, [split.family.queries[i].subject for i in train], embedder.embed(texts), outcomes)

    assert len(test.tasks) == 50
    assert all(len(task.item_rows) == 20 for task in test.tasks)
    assert len({texts[r] for r in test.item_rows}) == 1000
    share_right = np.nanmean(outcomes[test.item_rows] >= 0.5, axis=1)
    assert ((share_right > 0) & (share_right < 1)).all(), "an item every model gets right or wrong"
    assert abs(float(np.mean(share_right)) - 0.5) < 0.2, "items should be balanced around half the models right"
    assert all(task.keywords and task.description for task in test.tasks)


def test_items_spread_over_difficulty_measure_a_new_model_at_every_level() -> None:
    """A new model known only from its item answers, put on everyone's queries by the difficulty shift: items
    spread over every share of right models measure the strongest and the weakest models, while items near a half
    share (nearly all right for strong models, nearly all wrong for weak ones) leave them misjudged."""
    rng = np.random.default_rng(0)
    ability, difficulty = np.linspace(-2.0, 2.0, 10), rng.normal(0.0, 1.5, 3000)
    outcomes = (rng.random((3000, 10)) < 1.0 / (1.0 + np.exp(difficulty[:, None] - ability[None, :]))).astype(float)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    texts = [f"question {i}" for i in range(3000)]
    errors = {}
    for spread in (False, True):
        misjudged = []
        for new in range(10):
            known = [m for m in range(10) if m != new]
            test = build_aptitude_test(texts, ["s"] * 3000, vectors, outcomes[:, known], spread=spread)
            seen = outcomes.copy()
            unseen = np.ones(3000, dtype=bool)
            unseen[test.item_rows] = False
            seen[unseen, new] = np.nan
            estimate = np.nanmean(seen[:, new]) + difficulty_shift(seen)[new]
            misjudged.append(abs(estimate - outcomes[:, new].mean()))
        errors[spread] = np.array(misjudged)
    assert errors[True].max() < 0.03, errors[True]
    assert errors[True].mean() < 0.5 * errors[False].mean(), errors
    assert errors[False][[0, -1]].min() > errors[True][[0, -1]].max(), "the extremes are where spread items matter"


def _synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two kinds of query; models strong on one kind or the other; their aptitude shows which."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 2, 400)
    centres = rng.normal(size=(2, 16))
    vectors = centres[kinds] + 0.3 * rng.normal(size=(400, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    skill = np.array([[0.9, 0.2], [0.2, 0.9], [0.8, 0.3], [0.3, 0.8], [0.6, 0.6], [0.85, 0.25]])
    outcomes = (rng.random((400, len(skill))) < skill[:, kinds].T).astype(float)
    items = np.stack([(rng.random((len(skill), 20)) < skill[:, k : k + 1]).astype(float) for k in (0, 1)], axis=1)
    return vectors, outcomes, items, centres.astype(np.float32)


def test_checkpoint_round_trip_gives_the_same_predictions(tmp_path: Path) -> None:
    vectors, outcomes, items, tasks = _synthetic()
    sat, metrics = train_model_sat(
        vectors, outcomes, items, tasks, ModelSatConfig(epochs=3, hidden=32, model_dim=16), device="cpu"
    )
    assert 0 <= metrics["ece_calibrated"] < 0.2
    path = tmp_path / "sat.pt"
    sat.save(path, {"version": 1})
    loaded = ModelSat.load(path, "cpu")
    aptitude = aptitude_vectors(items)
    np.testing.assert_allclose(
        loaded.predict(vectors[:20], loaded.embed_models(aptitude)),
        sat.predict(vectors[:20], sat.embed_models(aptitude)),
        atol=1e-6,
    )


def test_a_model_unseen_in_training_is_scored_from_its_aptitude_alone() -> None:
    vectors, outcomes, items, tasks = _synthetic()
    held_out = 5  # strong on kind 0, never seen in training
    seen = [0, 1, 2, 3, 4]
    sat, _ = train_model_sat(
        vectors, outcomes[:, seen], items[seen], tasks, ModelSatConfig(epochs=15, hidden=64, model_dim=32), device="cpu"
    )
    p = sat.predict(vectors, sat.embed_models(aptitude_vectors(items)))
    kinds = (vectors @ tasks.T).argmax(axis=1)
    assert p[kinds == 0, held_out].mean() > p[kinds == 1, held_out].mean() + 0.2
    # On its strong kind it outranks the specialist of the other kind.
    assert (p[kinds == 0, held_out] > p[kinds == 0, 1]).mean() > 0.9


def test_training_never_reads_a_new_models_outcomes_beyond_the_aptitude_items(zeroeval_split) -> None:  # type: ignore[no-untyped-def]
    split = zeroeval_split
    new_model = split.models[0]
    aptitude_rows = set(split.train_rows[:37])
    family = training_family(split, {new_model}, aptitude_rows)
    aptitude_ids = {split.family.queries[i].query_id for i in aptitude_rows}
    test_ids = {split.family.queries[i].query_id for i in split.test_rows}
    new_model_queries = {o.query_id for o in family.outcomes if o.model == new_model}
    assert new_model_queries == aptitude_ids
    assert not {o.query_id for o in family.outcomes} & test_ids
    assert {q.query_id for q in family.queries}.isdisjoint(test_ids)


def test_harness_onboards_a_held_out_model_from_its_aptitude_test(embedder: CachedEmbedder, tmp_path: Path) -> None:
    family = read_family(shared_family("zeroeval"))
    split = split_family(family, 0, None)
    strongest = split.models[int(np.nanargmax(np.nanmean(split.outcomes[split.train_rows], axis=0)))]
    report = evaluate(
        shared_family("zeroeval").parent,
        "zeroeval",
        tmp_path,
        Settings(data_dir=tmp_path),
        embedder,
        seed=0,
        new_models=[strongest],
        log=lambda _: None,
        progress=False,
    )
    assert set(report["routers"]) >= {"random", "best_single", "oracle", "knn", "profile", "sat", "capprof"}
    onboarding = report["onboarding"]
    assert onboarding["new_models"] == [strongest]
    assert onboarding["share_routed_to_new_models"] > 0.5, "the strongest model, known only by its aptitude, should win"
    assert onboarding["aptitude_only"]["accuracy"] >= onboarding["full_information"]["accuracy"] - 0.01
    assert report["aptitude_test"] == {"tasks": 50, "items": 1000}
    assert (tmp_path / "report.md").exists() and (tmp_path / "cost_quality.png").stat().st_size > 10_000
