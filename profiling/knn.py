"""kNN estimator: P(correct | model, query) = similarity-weighted mean outcome on the nearest evaluation queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OutcomeTable:
    """Outcomes (queries x models) split once into values with NaN as 0 and a known-mask, for fast products."""

    filled: npt.NDArray[np.float32]
    known: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        # Each route gathers k whole rows: row-contiguous storage keeps that a memcpy.
        object.__setattr__(self, "filled", np.ascontiguousarray(self.filled, dtype=np.float32))
        object.__setattr__(self, "known", np.ascontiguousarray(self.known, dtype=np.float32))

    @classmethod
    def from_outcomes(cls, outcomes: npt.NDArray[np.float32]) -> OutcomeTable:
        known = ~np.isnan(outcomes)
        return cls(np.where(known, outcomes, 0).astype(np.float32), known.astype(np.float32))

    @property
    def n_models(self) -> int:
        return self.filled.shape[1]


def knn_estimate(
    table: OutcomeTable, rows: npt.NDArray[np.int64], sims: npt.NDArray[np.float32]
) -> tuple[Matrix, Matrix]:
    """(estimate, support), each (batch x models): similarity-weighted mean outcome of the neighbours.

    Support is the similarity mass behind each estimate (0 where the model has no neighbour outcome).
    """
    if rows.shape[1] == 0 or table.filled.shape[0] == 0:
        empty = np.zeros((rows.shape[0], table.n_models))
        return empty, empty.copy()
    weights = np.clip(sims, 0.0, None).astype(np.float32)[:, None, :]  # batch x 1 x k
    total = np.matmul(weights, table.filled[rows])[:, 0, :].astype(np.float64)
    support = np.matmul(weights, table.known[rows])[:, 0, :].astype(np.float64)
    estimate = np.divide(total, support, out=np.zeros_like(total), where=support > 0)
    return estimate, support
