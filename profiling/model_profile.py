"""Model profiles: Score(M, e) from evaluation records, rank-weighted, cost-penalised and shrunk.

Score(M, e) = sum_i (s_i - b * cost_i) * w(e, i) / support, with w(e, i) the weight of dimension e in
evaluation query i's profile. Kept as running sums so new records update a profile incrementally;
the shrinkage toward the model's overall mean is applied when the matrix is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]
COST_UNIT = 1000.0
"""Costs enter profiles and lambda in USD per 1,000 queries, a scale comparable with accuracy."""


@dataclass
class ProfileSums:
    """Per (model, dimension): sum of weighted values, sum of weights (support) and record count."""

    weighted_sum: Matrix
    support: Matrix
    count: npt.NDArray[np.int64]

    @classmethod
    def zeros(cls, n_models: int, n_dimensions: int) -> ProfileSums:
        shape = (n_models, n_dimensions)
        return cls(np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=np.int64))


def record_values(scores: npt.ArrayLike, costs: npt.ArrayLike, cost_penalty: float) -> Matrix:
    """s - b * cost (cost in USD per 1,000 queries; an unknown cost adds no penalty)."""
    return np.asarray(scores, np.float64) - cost_penalty * COST_UNIT * np.nan_to_num(
        np.asarray(costs, np.float64), nan=0.0
    )


def accumulate(
    query_weights: Matrix,
    model_index: npt.NDArray[np.int64],
    query_row: npt.NDArray[np.int64],
    values: Matrix,
    n_models: int,
) -> ProfileSums:
    """Sums for records (model_index[r], query_row[r], values[r]) given each query's dimension weights."""
    sums = ProfileSums.zeros(n_models, query_weights.shape[1])
    for model in np.unique(model_index):
        picked = model_index == model
        weights = query_weights[query_row[picked]]
        sums.weighted_sum[model] = values[picked] @ weights
        sums.support[model] = weights.sum(axis=0)
        sums.count[model] = (weights > 0).sum(axis=0)
    return sums


def model_means(
    model_index: npt.NDArray[np.int64], values: Matrix, n_models: int, prior_strength: float = 0.0
) -> Matrix:
    """Each model's mean value over its records, shrunk toward the population by `prior_strength` pseudo-records."""
    totals = np.bincount(model_index, weights=values, minlength=n_models).astype(np.float64)
    counts = np.bincount(model_index, minlength=n_models).astype(np.float64)
    return shrunk_means(totals, counts, prior_strength)


def shrunk_means(totals: Matrix, counts: Matrix, prior_strength: float) -> Matrix:
    """(total + k * population) / (count + k) per model, from each model's sum and number of record values.

    The population mean is the mean of the models' own means, so a model with one lucky record is not taken
    at its word. NaN for a model without records only when there is no population either, or no prior.
    """
    raw = np.divide(totals, counts, out=np.full(len(totals), np.nan), where=counts > 0)
    if prior_strength <= 0 or not np.isfinite(raw).any():
        return raw
    population = float(np.nanmean(raw))
    return (totals + prior_strength * population) / (counts + prior_strength)


def difficulty_shift(outcomes: npt.NDArray[np.floating]) -> Matrix:
    """Per model: how far its mean over the queries it was evaluated on is from its mean over all of them.

    A model evaluated on a few queries (a new model's aptitude items, chosen because they tell models apart; or a
    REST model's favourite benchmark) looks as good as those queries are easy for it, not as good as it is. A Rasch
    model, P(correct) = sigmoid(ability - difficulty), fitted on the (queries x models) outcome table (NaN = no
    record) puts every model on the same queries: its mean over all of them, observed outcomes where it has them
    and the fit elsewhere, less its raw mean. 0 for a model evaluated on every query, or on none.
    """
    completed, raw, counts = _rasch_means(outcomes)
    return np.where(counts > 0, completed - raw, 0.0)


def evidence_share(evidence: npt.NDArray[np.floating], prior_strength: float) -> Matrix:
    """n / (n + k): how much an estimate from n records moves away from its prior of k pseudo-records."""
    n = np.asarray(evidence, np.float64)
    if prior_strength <= 0:
        return np.ones_like(n)
    return n / (n + prior_strength)


def difficulty_adjusted_profile(
    sums: ProfileSums,
    means: Matrix,
    counts: Matrix,
    shift: Matrix,
    mean_shrinkage: float,
    shrinkage: float,
) -> tuple[Matrix, Matrix]:
    """(means, profile) with each model's `difficulty_shift` applied to its evidence only.

    `means` are shrunk toward the population already; the shift corrects the raw mean over the model's records,
    so it moves the shrunk mean by the records' share of it: (n x (raw + shift) + k x population) / (n + k).
    Likewise a profile cell moves by its support's share, around the adjusted mean as its prior. A model known
    from one record keeps nearly the population's mean whichever way that record went (adding the whole shift
    to a shrunk mean had put a model with one wrong answer at 1.0 and one with a right answer near 0).
    """
    adjusted = np.clip(means + evidence_share(counts, mean_shrinkage) * shift, 0.0, 1.0)
    profile = shrunk_profile(sums, adjusted, shrinkage) + evidence_share(sums.support, shrinkage) * shift[:, None]
    return adjusted, np.clip(profile, 0.0, 1.0)


def difficulty_adjusted_means(outcomes: npt.NDArray[np.floating]) -> Matrix:
    """Per model: its mean over every query of the table, observed outcomes where it has them and the Rasch fit
    elsewhere (its raw mean plus `difficulty_shift`); 0 for a model without records."""
    completed, _, counts = _rasch_means(outcomes)
    return np.where(counts > 0, completed, 0.0)


def rasch_fit(
    outcomes: npt.NDArray[np.floating],
    iterations: int = 30,
    ability_prior: float = 0.1,
    difficulty_prior: float = 0.1,
    tolerance: float = 1e-3,
) -> tuple[Matrix, Matrix]:
    """(ability per model, difficulty per query) of P(correct) = sigmoid(ability - difficulty) on a (queries x models)
    outcome table, NaN = no record: alternating Newton steps with Gaussian priors (they also fix the origin)."""
    observed = ~np.isnan(outcomes)
    scores = np.where(observed, outcomes, 0.0).astype(np.float64)
    ability, difficulty = np.zeros(outcomes.shape[1]), np.zeros(outcomes.shape[0])

    def residuals() -> tuple[Matrix, Matrix]:
        p = rasch_p(ability, difficulty)
        return (scores - p) * observed, p * (1.0 - p) * observed

    for _ in range(iterations):
        gradient, curvature = residuals()
        step = (gradient.sum(axis=0) - ability_prior * ability) / (curvature.sum(axis=0) + ability_prior)
        ability += step
        gradient, curvature = residuals()
        difficulty -= (gradient.sum(axis=1) + difficulty_prior * difficulty) / (
            curvature.sum(axis=1) + difficulty_prior
        )
        if np.abs(step).max() < tolerance:  # abilities have settled: the means they give will not move
            break
    return ability, difficulty


def rasch_p(ability: Matrix, difficulty: Matrix) -> Matrix:
    """(queries x models) P(correct) of a Rasch fit."""
    return np.asarray(1.0 / (1.0 + np.exp(difficulty[:, None] - ability[None, :])))


def _rasch_means(outcomes: npt.NDArray[np.floating]) -> tuple[Matrix, Matrix, Matrix]:
    """Per model: (mean over every query with the fit filling the gaps, raw mean over its records, its records)."""
    if outcomes.size == 0:
        empty = np.zeros(outcomes.shape[1] if outcomes.ndim == 2 else 0)
        return empty, empty, empty
    observed = ~np.isnan(outcomes)
    scores = np.where(observed, outcomes, 0.0).astype(np.float64)
    counts = observed.sum(axis=0)
    raw = np.divide(scores.sum(axis=0), counts, out=np.zeros(len(counts)), where=counts > 0)
    completed = np.where(observed, scores, rasch_p(*rasch_fit(outcomes))).mean(axis=0)
    return completed, raw, counts.astype(np.float64)


def shrunk_profile(sums: ProfileSums, means: Matrix, shrinkage: float) -> Matrix:
    """(weighted_sum + k * mean) / (support + k): thin evidence leans on the model's overall mean."""
    fallback = np.where(np.isnan(means), np.nanmean(means) if np.isfinite(means).any() else 0.0, means)
    prior = fallback[:, None]
    denominator = sums.support + shrinkage
    return np.divide(
        sums.weighted_sum + shrinkage * prior,
        denominator,
        out=np.broadcast_to(prior, sums.support.shape).copy(),
        where=denominator > 0,
    )


def profile_estimate(
    query_weights: Matrix, profile: Matrix, kind_masks: list[npt.NDArray[np.bool_]], means: Matrix
) -> Matrix:
    """Stage-1 quality (batch x models): per kind, sum_j w_j Score(M, e_j), averaged over the kinds present.

    Averaging keeps the estimate on the scale of P(correct); it ranks exactly as the paper's sum.
    """
    present = np.stack([(query_weights[:, mask].sum(axis=1) > 0) for mask in kind_masks], axis=1)
    kinds_present = present.sum(axis=1, keepdims=True).astype(np.float64)
    scaled = np.divide(query_weights, kinds_present, out=np.zeros_like(query_weights), where=kinds_present > 0)
    used = np.flatnonzero(scaled.any(axis=0))  # a query weighs a handful of dimensions
    estimate = scaled[:, used] @ profile[:, used].T
    fallback = np.where(np.isnan(means), 0.0, means)
    return np.where(kinds_present > 0, estimate, fallback[None, :])
