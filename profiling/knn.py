"""kNN estimator: P(correct | model, query) = similarity-weighted mean outcome on the nearest evaluation queries."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]


def knn_estimate(
    outcomes: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], sims: npt.NDArray[np.float32]
) -> tuple[Matrix, Matrix]:
    """(estimate, support), each (batch x models); outcomes is (queries x models) with NaN = not evaluated.

    Support is the similarity mass behind each estimate (0 where the model has no neighbour outcome).
    """
    if rows.shape[1] == 0 or outcomes.shape[0] == 0:
        empty = np.zeros((rows.shape[0], outcomes.shape[1]))
        return empty, empty.copy()
    neighbour = outcomes[rows]  # batch x k x models
    known = ~np.isnan(neighbour)
    weight = np.clip(sims, 0.0, None)[:, :, None].astype(np.float64) * known
    support = weight.sum(axis=1)
    total = (np.where(known, neighbour, 0.0) * weight).sum(axis=1)
    estimate = np.divide(total, support, out=np.zeros_like(total), where=support > 0)
    return estimate, support
