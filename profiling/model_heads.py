"""Per-model heads: one L2 logistic regression per model over the query embedding, P(correct | query).

Stage 1 knows a model through its profile (per dimension) and its nearest evaluated queries (kNN); a head reads
the whole embedding with the model's own outcomes, which is the sharper per-query signal cross-validation found
(docs/evaluation.md, "per-model heads"). Each head is placed at its model's mean over all the training queries (the
difficulty fit's, as stage 1's profile is), and its P(correct) is blended into stage 1 with a share that grows with
the records it was fitted on, so a head fitted on a handful of records barely moves the estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from profiling.model_profile import difficulty_adjusted_means

FloatArray = npt.NDArray[np.float64]

HEAD_L2_C = 1.0
"""Inverse L2 strength of each head (scikit-learn's C), the value scripts/lever_heads.py measured."""


@dataclass(frozen=True)
class ModelHeads:
    """Heads for a set of models: row i belongs to `keys[i]` (a model id as text in the service, a name in the
    harness); `records[i]` is how many outcomes it was fitted on (0: no head)."""

    keys: tuple[str, ...]
    coef: FloatArray  # models x embedding dim
    intercept: FloatArray  # models
    records: FloatArray  # models

    def arranged(self, keys: Sequence[str]) -> ModelHeads:
        """The heads in the order of `keys`; a key without a head gets zero weights and zero records."""
        row = {k: i for i, k in enumerate(self.keys)}
        dim = self.coef.shape[1]
        coef, intercept, records = np.zeros((len(keys), dim)), np.zeros(len(keys)), np.zeros(len(keys))
        for i, key in enumerate(keys):
            if key in row:
                coef[i], intercept[i], records[i] = (
                    self.coef[row[key]],
                    self.intercept[row[key]],
                    self.records[row[key]],
                )
        return ModelHeads(tuple(keys), coef, intercept, records)

    def taken(self, rows: npt.NDArray[np.int64], keys: Sequence[str]) -> ModelHeads:
        """The heads of `rows` (repeats allowed), renamed `keys`: for a pool built from this one's models."""
        return ModelHeads(tuple(keys), self.coef[rows], self.intercept[rows], self.records[rows])

    def predict(self, vectors: npt.ArrayLike) -> FloatArray:
        """(queries x models) P(correct) of each head."""
        logits = np.asarray(vectors, np.float64) @ self.coef.T + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-logits)))

    def recentred(self, vectors: npt.ArrayLike, target_means: npt.ArrayLike, steps: int = 30) -> ModelHeads:
        """The heads with each intercept moved so that their mean P(correct) over `vectors` is `target_means`.

        A head fitted on a new model's aptitude items learns how often it is right on those items, which are easier
        for strong models than queries at large; moved to the model's mean over all the queries it was trained
        beside (from the difficulty fit, as stage 1's profile is), it keeps what it learned about which queries
        suit the model and stops overrating it. A head fitted on every query barely moves. Models without a head are left alone.
        """
        x = np.asarray(vectors, np.float64)
        if not len(x):
            return self
        logits = x @ self.coef.T + self.intercept
        target = np.clip(np.asarray(target_means, np.float64), 1e-4, 1 - 1e-4)
        shift = np.zeros(len(self.keys))
        for _ in range(steps):  # Newton on mean(sigmoid(logit + shift)) = target, per model
            p = 1.0 / (1.0 + np.exp(-(logits + shift)))
            slope = (p * (1 - p)).mean(axis=0)
            shift -= np.clip((p.mean(axis=0) - target) / np.maximum(slope, 1e-6), -2.0, 2.0)
        moved = np.where(self.records > 0, self.intercept + shift, self.intercept)
        return ModelHeads(self.keys, self.coef, moved, self.records)

    def shares(self, weight: float, pseudo_count: float) -> FloatArray:
        """Per model, the head's share in P(correct): weight * n / (n + pseudo_count), n its records."""
        n = np.maximum(self.records, 0.0)
        if pseudo_count <= 0:
            return np.where(n > 0, weight, 0.0)
        return weight * n / (n + pseudo_count)

    def to_tensors(self) -> dict[str, object]:
        """A plain dict of lists and arrays that `torch.save` and `weights_only` loading both accept."""
        return {
            "keys": list(self.keys),
            "coef": torch.as_tensor(self.coef),
            "intercept": torch.as_tensor(self.intercept),
            "records": torch.as_tensor(self.records),
        }

    @classmethod
    def from_tensors(cls, blob: dict[str, object]) -> ModelHeads:
        def array(name: str) -> FloatArray:
            value = blob[name]
            return np.asarray(value.numpy() if hasattr(value, "numpy") else value, np.float64)

        keys = blob["keys"]
        assert isinstance(keys, list)
        return cls(tuple(str(k) for k in keys), array("coef"), array("intercept"), array("records"))


def smoothed_logits(outcomes: npt.ArrayLike) -> FloatArray:
    """Per column of `outcomes` (NaN = no record), the log-odds of its rate of right answers, smoothed by half a
    record each way: a constant head's intercept, finite for a model that is always right."""
    y = np.asarray(outcomes, np.float64)
    known = ~np.isnan(y)
    rate = (np.where(known, y >= 0.5, False).sum(axis=0) + 0.5) / (known.sum(axis=0) + 1.0)
    return np.asarray(np.log(rate / (1 - rate)))


def fit_heads(
    vectors: npt.ArrayLike, outcomes: npt.ArrayLike, keys: Sequence[str], c: float = HEAD_L2_C, max_iter: int = 200
) -> ModelHeads:
    """One head per column of `outcomes` (queries x models, NaN = no record; a score >= 0.5 counts as right).

    Each head minimises c x its log-loss over its records + |w|^2 / 2 (scikit-learn's L2 logistic regression;
    the intercept is not penalised). The heads are independent, so they are fitted together, by L-BFGS on the
    summed objective: one optimisation instead of one per model. A model with outcomes of one kind only gets a
    constant head at its smoothed rate; one with none gets no head.
    """
    x = torch.as_tensor(np.asarray(vectors, np.float64))
    y_all = np.asarray(outcomes, np.float64)
    known = ~np.isnan(y_all)
    right = np.where(known, y_all >= 0.5, False)
    records = known.sum(axis=0).astype(np.float64)
    prior = smoothed_logits(y_all)
    both_kinds = (right.sum(axis=0) > 0) & (right.sum(axis=0) < records)
    coef = torch.zeros((x.shape[1], y_all.shape[1]), dtype=torch.float64, requires_grad=True)
    intercept = torch.as_tensor(prior.copy()).requires_grad_(True)
    target = torch.as_tensor(right.astype(np.float64))
    weight = torch.as_tensor((known & both_kinds).astype(np.float64))
    optimiser = torch.optim.LBFGS([coef, intercept], max_iter=max_iter, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(x @ coef + intercept, target, weight, reduction="sum")
        total = c * loss + 0.5 * (coef * coef).sum()
        total.backward()
        return total

    if both_kinds.any():
        optimiser.step(objective)
    fitted_coef = np.where(both_kinds, coef.detach().numpy(), 0.0).T
    fitted_intercept = np.where(both_kinds, intercept.detach().numpy(), np.where(records > 0, prior, 0.0))
    return ModelHeads(tuple(keys), fitted_coef, fitted_intercept, records)


HeadFitter = Callable[[npt.ArrayLike, npt.ArrayLike, Sequence[str]], ModelHeads]


def train_heads(
    vectors: npt.ArrayLike, outcomes: npt.ArrayLike, keys: Sequence[str], placed: bool, fit: HeadFitter = fit_heads
) -> ModelHeads:
    """Heads fitted on `outcomes` (queries x models, NaN = no record); `placed`: each moved to its model's mean over
    all of these queries, observed outcomes where it has them and the difficulty fit elsewhere (see `recentred`),
    as stage 1 does with the difficulty adjustment on. `fit`: another way to fit them (a lever script's)."""
    y = np.asarray(outcomes, np.float64)
    heads = fit(vectors, y, keys)
    if not placed:
        return heads
    return heads.recentred(vectors, difficulty_adjusted_means(np.where(np.isnan(y), np.nan, y >= 0.5)))


def with_interim_heads(
    heads: ModelHeads, vectors: npt.ArrayLike, outcomes: npt.ArrayLike, target_means: npt.ArrayLike | None
) -> ModelHeads:
    """`heads` (in the columns of `outcomes`) with a head fitted now for every model that has no head and records,
    right and wrong ones.

    A model registered after the checkpoint, onboarded from its aptitude answers (which checkpoint training does not
    read) or given evaluations over REST, would otherwise route without one: on mmlu_pro's worst onboarding choice
    that state lost 2.03 points, 1.34 with the head (docs/evaluation.md). Fitted as a checkpoint fits heads, on the
    model's own records, and placed at `target_means` (routing's difficulty-fitted means; None: not placed).
    """
    y = np.asarray(outcomes, np.float64)
    right, wrong = (y >= 0.5).any(axis=0), (y < 0.5).any(axis=0)  # NaN compares false
    # records of one kind give a constant head: no per-query signal, only a pull toward the model's overall mean
    # that would blur what stage 1 knows of where its records are (a specialist's domain)
    missing = np.flatnonzero((heads.records <= 0) & right & wrong)
    if not missing.size:
        return heads
    x = np.asarray(vectors, np.float64)
    rows = np.flatnonzero((~np.isnan(y[:, missing])).any(axis=1))
    fitted = fit_heads(x[rows], y[np.ix_(rows, missing)], [heads.keys[c] for c in missing])
    if target_means is not None:
        fitted = fitted.recentred(x, np.asarray(target_means, np.float64)[missing])
    coef, intercept, records = heads.coef.copy(), heads.intercept.copy(), heads.records.copy()
    coef[missing], intercept[missing], records[missing] = fitted.coef, fitted.intercept, fitted.records
    return ModelHeads(heads.keys, coef, intercept, records)


def head_keys(model_ids: Sequence[int] | npt.NDArray[np.int64]) -> list[str]:
    """The keys the service's heads are stored under: database model ids as text."""
    return [str(int(m)) for m in model_ids]


def blend_heads(p_stage1: FloatArray, p_heads: FloatArray, shares: FloatArray) -> FloatArray:
    """(1 - share) * stage 1 + share * head, per model (share 0: stage 1 unchanged)."""
    return (1.0 - shares) * p_stage1 + shares * p_heads
