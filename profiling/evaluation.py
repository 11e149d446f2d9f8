"""Router metrics on held-out queries: realised accuracy and cost, cost-quality curves, baselines.

Choices use *estimated* P(correct) and cost; realised figures use the *actual* outcome and cost of the
chosen model on each test query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from profiling.scoring import blend, stage2_top_k, utility

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


def _argmax_cheapest(scores: Matrix, estimated_costs: Matrix) -> npt.NDArray[np.int64]:
    best = scores.max(axis=1, keepdims=True)
    tied = np.isclose(scores, best, rtol=0, atol=1e-12) & np.isfinite(scores)
    return np.where(tied, np.nan_to_num(estimated_costs, nan=np.inf), np.inf).argmin(axis=1).astype(np.int64)


def choose(p_correct: Matrix, estimated_costs: Matrix, cost_weight: float) -> npt.NDArray[np.int64]:
    """Argmax of P(correct) - lambda * cost per 1,000 queries; ties go to the cheaper estimate."""
    return _argmax_cheapest(utility(p_correct, estimated_costs, cost_weight), estimated_costs)


def choose_reranked(
    stage1: Matrix, stage2: Matrix, estimated_costs: Matrix, cost_weight: float, top_k: int, weight: float
) -> npt.NDArray[np.int64]:
    """The service's two-stage choice: stage-1 top-K by utility, re-scored with the blended estimate."""
    top = stage2_top_k(utility(stage1, estimated_costs, cost_weight), np.ones_like(stage1, dtype=bool), top_k)
    scores = utility(blend(stage1, stage2, top, weight), estimated_costs, cost_weight)
    return _argmax_cheapest(np.where(top, scores, -np.inf), estimated_costs)


def curve_of(
    chooser: Callable[[float], npt.NDArray[np.int64]],
    outcomes: Matrix,
    costs: Matrix,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
) -> list[CurvePoint]:
    """Realised accuracy and cost of a router's choices at each lambda."""
    points = []
    for lam in lambdas:
        point = realised(outcomes, costs, chooser(lam))
        points.append(CurvePoint(float(lam), point.accuracy, point.cost_per_query))
    return points


def curve(
    p_correct: Matrix,
    estimated_costs: Matrix,
    outcomes: Matrix,
    costs: Matrix,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
) -> list[CurvePoint]:
    return curve_of(lambda lam: choose(p_correct, estimated_costs, lam), outcomes, costs, lambdas)


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
