"""Calibrating the final P(correct): Platt scaling on validation outcomes, and the reliability curve that shows it.

The blend of profile, kNN and Model-SAT estimates is a score on the probability scale, not a probability: a
calibrated P(correct) means "0.8" is right about 80% of the time, which presets, budgets and reports rely on.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from profiling.model_sat import fit_platt

Matrix = npt.NDArray[np.float64]
EPS = 1e-4


def _logit(p: Matrix) -> Matrix:
    clipped = np.clip(p, EPS, 1 - EPS)
    return np.log(clipped / (1 - clipped))


def fit_probability_calibration(p: Matrix, y: Matrix) -> tuple[float, float]:
    """(scale, bias) for `calibrate`, fitted on known (p, outcome) pairs."""
    known = ~np.isnan(y)
    return fit_platt(_logit(np.asarray(p, np.float64)[known]), np.asarray(y, np.float64)[known])


def calibrate(p: Matrix, params: tuple[float, float] | None) -> Matrix:
    """sigmoid(scale * logit(p) + bias); monotone, so it never changes which model ranks first at lambda 0."""
    if params is None:
        return p
    scale, bias = params
    return 1.0 / (1.0 + np.exp(-(scale * _logit(p) + bias)))


def reliability(p: Matrix, y: Matrix, bins: int = 10) -> list[dict[str, float]]:
    """Per probability bin with data: mean predicted P, observed accuracy and the number of pairs."""
    known = ~np.isnan(y)
    p, y = np.asarray(p)[known], np.asarray(y)[known]
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    return [
        {
            "predicted": float(p[which == b].mean()),
            "observed": float(y[which == b].mean()),
            "n": float((which == b).sum()),
        }
        for b in range(bins)
        if (which == b).any()
    ]
