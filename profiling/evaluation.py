"""Router metrics on held-out queries: realised accuracy and cost, cost-quality curves, baselines.

Choices use *estimated* P(correct) and cost; realised figures use the *actual* outcome and cost of the
chosen model on each test query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from profiling.model_profile import COST_UNIT

Matrix = npt.NDArray[np.float64]
DEFAULT_LAMBDAS = (0.0, *np.round(np.logspace(-4, 1, 26), 6).tolist())


def is_test(query_id: str, seed: int, test_share: float = 0.3) -> bool:
    """Deterministic split by hashed id: the same query lands on the same side for a given seed."""
    digest = hashlib.sha256(f"{seed}:{query_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_share


@dataclass(frozen=True)
class Point:
    accuracy: float
    cost_per_query: float


@dataclass(frozen=True)
class CurvePoint:
    cost_weight: float
    accuracy: float
    cost_per_query: float


def realised(outcomes: Matrix, costs: Matrix, choice: npt.NDArray[np.int64]) -> Point:
    """Mean outcome and mean actual cost of the chosen model per query (outcomes/costs: queries x models)."""
    rows = np.arange(len(choice))
    return Point(float(outcomes[rows, choice].mean()), float(costs[rows, choice].mean()))


def choose(p_correct: Matrix, estimated_costs: Matrix, cost_weight: float) -> npt.NDArray[np.int64]:
    """Argmax of P(correct) - lambda * cost per 1,000 queries; ties go to the cheaper estimate."""
    utility = p_correct - cost_weight * COST_UNIT * np.nan_to_num(estimated_costs, nan=0.0)
    best = utility.max(axis=1, keepdims=True)
    tied = np.isclose(utility, best, rtol=0, atol=1e-12)
    return np.where(tied, np.nan_to_num(estimated_costs, nan=np.inf), np.inf).argmin(axis=1).astype(np.int64)


def curve(
    p_correct: Matrix,
    estimated_costs: Matrix,
    outcomes: Matrix,
    costs: Matrix,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
) -> list[CurvePoint]:
    points = []
    for lam in lambdas:
        point = realised(outcomes, costs, choose(p_correct, estimated_costs, lam))
        points.append(CurvePoint(float(lam), point.accuracy, point.cost_per_query))
    return points


def random_router(outcomes: Matrix, costs: Matrix) -> Point:
    """The expectation of picking a model uniformly at random for each query."""
    return Point(float(outcomes.mean()), float(costs.mean()))


def best_single(train_accuracy: Matrix, outcomes: Matrix, costs: Matrix) -> tuple[int, Point]:
    """The model with the best training accuracy, measured on the test queries."""
    model = int(np.argmax(train_accuracy))
    return model, Point(float(outcomes[:, model].mean()), float(costs[:, model].mean()))


def oracle(outcomes: Matrix, costs: Matrix) -> Point:
    """The cheapest correct model per query (the cheapest model when none is correct): the ceiling."""
    correct = outcomes >= 0.5
    correct_cost = np.where(correct, costs, np.inf).min(axis=1)
    any_correct = correct.any(axis=1)
    cost = np.where(any_correct, correct_cost, costs.min(axis=1))
    return Point(float(outcomes.max(axis=1).mean()), float(cost.mean()))


def cost_at_accuracy(points: Sequence[CurvePoint | Point], target: float, tolerance: float = 1e-12) -> float | None:
    """The lowest cost per query among points whose accuracy reaches the target; None if none does."""
    reaching = [p.cost_per_query for p in points if p.accuracy >= target - tolerance]
    return min(reaching) if reaching else None
