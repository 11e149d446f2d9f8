"""Per-model heads: a per-query signal from the model's own outcomes, weighed by how many there are."""

from pathlib import Path

import numpy as np
import pytest

from profiling.dataset import read_family
from profiling.model_heads import blend_heads, fit_heads, train_heads, with_interim_heads
from profiling.model_sat import ModelSat, ModelSatConfig, train_model_sat
from service.jobs.evaluate import split_family, split_heads, visible_training_outcomes, with_heads
from service.routing.engine import Estimates
from service.settings import Settings
from tests.conftest import shared_family


def _two_kinds(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Queries of two kinds; model 0 is right on kind 0 only, model 1 on kind 1 only."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 2, n)
    centres = rng.normal(size=(2, 16))
    vectors = centres[kinds] + 0.3 * rng.normal(size=(n, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    outcomes = np.stack([kinds == 0, kinds == 1], axis=1).astype(float)
    return vectors.astype(np.float32), outcomes


def test_heads_tell_apart_queries_a_model_gets_right_from_those_it_gets_wrong() -> None:
    vectors, outcomes = _two_kinds()
    heads = fit_heads(vectors[:300], outcomes[:300], ["a", "b"])
    p = heads.predict(vectors[300:])
    right = outcomes[300:] == 1
    assert p[right].min() > 0.6 and p[~right].max() < 0.4
    # Blended into a stage 1 that cannot tell the models apart, the heads pick the right model for every query.
    flat = np.full_like(p, 0.5)
    chosen = blend_heads(flat, p, heads.shares(0.5, 100.0)).argmax(axis=1)
    assert (outcomes[300:][np.arange(100), chosen] == 1).all()


def test_a_head_fitted_on_one_record_barely_moves_the_estimate() -> None:
    vectors, outcomes = _two_kinds()
    thin = np.full_like(outcomes, np.nan)
    thin[0, 0] = 1.0  # model "a": one right answer; model "b": nothing
    heads = fit_heads(vectors, thin, ["a", "b"])
    assert list(heads.records) == [1, 0]
    shares = heads.shares(0.5, 100.0)
    assert shares[0] == pytest.approx(0.5 / 101) and shares[1] == 0
    stage1 = np.full((len(vectors), 2), 0.4)
    blended = blend_heads(stage1, heads.predict(vectors), shares)
    assert np.abs(blended - stage1).max() < 0.01
    assert (heads.predict(vectors)[:, 0] < 0.8).all()  # one right answer is not certainty, even in the head itself


def test_a_head_fitted_on_easy_items_is_placed_at_the_models_mean_over_every_query() -> None:
    """Rasch data: a new model known only on the queries easiest for everyone looks better than it is; its placed
    head is moved to its mean over all queries, as the difficulty fit estimates it from the other models."""
    rng = np.random.default_rng(1)
    difficulty = rng.normal(0, 1.5, 600)
    ability = np.array([-1.0, 0.0, 1.0, 2.0, 1.0])
    truth = (rng.random((600, 5)) < 1 / (1 + np.exp(difficulty[:, None] - ability[None, :]))).astype(float)
    vectors = rng.normal(size=(600, 16)).astype(np.float32)
    outcomes = truth.copy()
    easiest = np.argsort(difficulty)[:150]
    outcomes[np.setdiff1d(np.arange(600), easiest), 4] = np.nan  # model 4: its "aptitude items" only
    keys = [str(m) for m in range(5)]
    plain, placed = fit_heads(vectors, outcomes, keys), train_heads(vectors, outcomes, keys, placed=True)
    true_mean = truth[:, 4].mean()
    assert plain.predict(vectors)[:, 4].mean() > true_mean + 0.2  # the items' rate, far above its real level
    assert abs(placed.predict(vectors)[:, 4].mean() - true_mean) < 0.08
    # a model known on every query keeps its level
    assert abs(placed.predict(vectors)[:, 2].mean() - truth[:, 2].mean()) < 0.01


def test_heads_travel_with_the_checkpoint_and_a_later_model_has_none(tmp_path: Path) -> None:
    vectors, outcomes = _two_kinds()
    items = np.stack([outcomes[:20].T, outcomes[20:40].T], axis=1)  # models x 2 tasks x 20 items
    sat, _ = train_model_sat(
        vectors, outcomes, items, vectors[:2], ModelSatConfig(epochs=1, hidden=16, model_dim=8), device="cpu"
    )
    sat.heads = fit_heads(vectors, outcomes, ["11", "12"])
    sat.save(tmp_path / "sat.pt")
    loaded = ModelSat.load(tmp_path / "sat.pt", "cpu")
    assert loaded.heads is not None and loaded.heads.keys == ("11", "12")
    np.testing.assert_allclose(loaded.heads.predict(vectors), sat.heads.predict(vectors))
    arranged = loaded.heads.arranged(["12", "99", "11"])  # routing order; model 99 was registered afterwards
    assert list(arranged.records) == [len(vectors), 0, len(vectors)]
    assert arranged.shares(0.5, 100.0)[1] == 0
    np.testing.assert_allclose(arranged.predict(vectors)[:, [0, 2]], sat.heads.predict(vectors)[:, [1, 0]])


def test_the_harness_fits_a_new_models_head_on_its_aptitude_items_only() -> None:
    split = split_family(read_family(shared_family("zeroeval")), seed=0, test_ids=None)
    new = split.models[0]
    item_rows = set(split.train_rows[:200])
    validation = split.train_rows[:50]
    visible = visible_training_outcomes(split, [new], item_rows)
    assert np.isnan(visible[200:, 0]).all()  # nothing of the new model beyond its items
    np.testing.assert_array_equal(np.isnan(visible[:, 1]), np.isnan(split.outcomes[split.train_rows, 1]))

    vectors = np.random.default_rng(0).normal(size=(len(split.family.queries), 8)).astype(np.float32)
    rows, models = len(split.test_rows), len(split.models)
    zeros = np.zeros((rows, models))
    stage1 = Estimates(np.zeros((rows, 1)), np.zeros((rows, 1)), np.zeros(rows, np.float32), zeros, zeros, zeros,
                       np.full((rows, models), 0.5), zeros)  # fmt: skip
    settings = Settings(heads_weight=0.5, heads_pseudo_count=100.0)
    heads = split_heads(split, vectors, visible, validation, settings)
    blended = with_heads(stage1, heads, vectors, split.test_rows, settings)
    assert blended.head_share is not None and blended.p_heads is not None
    fitted_on = (~np.isnan(visible[50:200, 0])).sum()  # its items outside the validation rows
    assert blended.head_share[0] == pytest.approx(0.5 * fitted_on / (fitted_on + 100.0))
    assert blended.head_share[1] > blended.head_share[0]  # a known model's head rests on all its records
    np.testing.assert_allclose(blended.p_correct, 0.5 * (1 - blended.head_share) + blended.head_share * blended.p_heads)


def test_models_without_a_head_get_one_fitted_on_their_records_of_both_kinds() -> None:
    """Routing fills in heads for models a checkpoint has none for: fitted as the checkpoint fits them and placed at
    routing's mean; a model with records of one kind gets none (a constant head carries no per-query signal)."""
    vectors, outcomes = _two_kinds()
    table = np.column_stack([outcomes, outcomes[:, 0], np.where(np.arange(400) < 50, 1.0, np.nan)])
    checkpoint = fit_heads(vectors[:300], outcomes[:300], ["a", "b"]).arranged(["a", "b", "late", "all-right"])
    assert list(checkpoint.records) == [300, 300, 0, 0]
    filled = with_interim_heads(checkpoint, vectors, table, target_means=[0.5, 0.5, 0.3, 0.9])
    np.testing.assert_array_equal(filled.coef[:2], checkpoint.coef[:2])  # the checkpoint's own heads stay
    assert list(filled.records) == [300, 300, 400, 0]
    own = fit_heads(vectors, table[:, 2:3], ["late"]).recentred(vectors, [0.3])
    np.testing.assert_allclose(filled.predict(vectors)[:, 2], own.predict(vectors)[:, 0], atol=1e-6)
    assert filled.predict(vectors)[:, 2].mean() == pytest.approx(0.3, abs=1e-3)  # placed at routing's mean
    p = filled.predict(vectors)[:, 2]
    assert p[outcomes[:, 0] == 1].mean() > p[outcomes[:, 0] == 0].mean() + 0.2  # and reads the query
    assert with_interim_heads(checkpoint, vectors, table, None).predict(vectors)[:, 2].mean() > 0.4  # not placed
