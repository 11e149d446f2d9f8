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


def reranked_p_correct(
    stage1: Matrix,
    stage2: Matrix,
    estimated_costs: Matrix,
    cost_weight: float,
    top_k: int,
    weight: float | Matrix,
    rerankable: npt.NDArray[np.bool_] | None = None,
) -> Matrix:
    """The service's final P(correct): stage 1, with the stage-1 top-K by utility re-scored with the blended
    estimate. `rerankable`: the models stage 2 can score (those with aptitude results; default all)."""
    eligible = np.ones_like(stage1, dtype=bool) if rerankable is None else np.broadcast_to(rerankable, stage1.shape)
    top = stage2_top_k(utility(stage1, estimated_costs, cost_weight), eligible, top_k)
    return blend(stage1, stage2, top, weight)


def choose_reranked(
    stage1: Matrix,
    stage2: Matrix,
    estimated_costs: Matrix,
    cost_weight: float,
    top_k: int,
    weight: float | Matrix,
    rerankable: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.int64]:
    """The service's two-stage choice: every model (re-scored or not) compared on its final utility."""
    p_final = reranked_p_correct(stage1, stage2, estimated_costs, cost_weight, top_k, weight, rerankable)
    return _argmax_cheapest(utility(p_final, estimated_costs, cost_weight), estimated_costs)


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


def oracle_choice(outcomes: Matrix, costs: Matrix) -> npt.NDArray[np.int64]:
    """Per query, the cheapest correct model (the cheapest model when none is correct)."""
    correct = outcomes >= 0.5
    cheapest_correct = np.where(correct, costs, np.inf).argmin(axis=1)
    return np.where(correct.any(axis=1), cheapest_correct, costs.argmin(axis=1)).astype(np.int64)


def oracle(outcomes: Matrix, costs: Matrix) -> Point:
    """The cheapest correct model per query (the cheapest model when none is correct): the ceiling."""
    return realised(outcomes, costs, oracle_choice(outcomes, costs))


def cost_at_accuracy(points: Sequence[CurvePoint | Point], target: float, tolerance: float = 1e-12) -> float | None:
    """The lowest cost per query among points whose accuracy reaches the target; None if none does."""
    reaching = [p.cost_per_query for p in points if p.accuracy >= target - tolerance]
    return min(reaching) if reaching else None


def common_accuracy(train_outcomes: Matrix) -> Matrix:
    """Per model, accuracy on the training queries every model has an outcome for.

    A new model known only from its aptitude items must be compared with the others on the same queries, never
    its accuracy on hard items against their accuracy on everything. Falls back to each model's own mean when no
    query is shared by all.
    """
    shared = ~np.isnan(train_outcomes).any(axis=1)
    if not shared.any():
        return np.nanmean(train_outcomes, axis=0)
    return train_outcomes[shared].mean(axis=0)


def plain_knn(
    test_vectors: npt.NDArray[np.float32],
    train_vectors: npt.NDArray[np.float32],
    train_outcomes: Matrix,
    train_costs: Matrix,
    k: int,
) -> tuple[Matrix, Matrix]:
    """(P(correct), cost) per test query and model: the similarity-weighted mean over the k most similar training
    queries, the routing literature's plain kNN baseline (unit-length vectors: similarity = dot product)."""
    sims = test_vectors @ train_vectors.T
    k = min(k, sims.shape[1])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    weights = np.clip(np.take_along_axis(sims, top, axis=1), 1e-6, None).astype(np.float64)

    def weighted(values: Matrix) -> Matrix:
        known = ~np.isnan(values)
        filled = np.where(known, values, 0.0)
        total = np.einsum("qk,qkm->qm", weights, filled[top])
        mass = np.einsum("qk,qkm->qm", weights, known[top].astype(np.float64))
        return np.divide(total, mass, out=np.full_like(total, np.nan), where=mass > 0)

    return weighted(train_outcomes), weighted(train_costs)


def _upper_hull(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
    """The non-decreasing concave hull of points: what mixing operating points can reach at each x."""
    points = sorted(zip(xs, ys, strict=True))
    hull: list[tuple[float, float]] = []
    for x, y in points:
        if hull and y <= hull[-1][1]:
            continue  # never pay more for less
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (x - x1) <= (y - y1) * (x2 - x1):
                hull.pop()  # the middle point lies under the chord
            else:
                break
        hull.append((x, y))
    return hull


def _hull_at(hull: list[tuple[float, float]], x: float) -> float:
    if x <= hull[0][0]:
        return hull[0][1]
    for (x1, y1), (x2, y2) in zip(hull, hull[1:], strict=False):
        if x <= x2:
            return y1 + (y2 - y1) * (x - x1) / (x2 - x1)
    return hull[-1][1]


def area_under_curve(xs: Sequence[float], ys: Sequence[float], low: float, high: float, steps: int = 2000) -> float:
    """Mean of the non-decreasing concave hull over [low, high] (flat beyond the points at either end)."""
    hull = _upper_hull(xs, ys)
    if high <= low:
        return _hull_at(hull, low)
    grid = np.linspace(low, high, steps)
    return float(np.mean([_hull_at(hull, float(x)) for x in grid]))


def aiq(points: Sequence[CurvePoint], low_cost: float, high_cost: float) -> float:
    """RouterBench's AIQ: the area under the cost-quality hull between two costs, divided by their distance.

    Here the costs span the cheapest and the most expensive single model on the test queries."""
    return area_under_curve([p.cost_per_query for p in points], [p.accuracy for p in points], low_cost, high_cost)


@dataclass(frozen=True)
class GapRecovery:
    """RouteLLM's figures against a (weak, strong) pair: APGR and the share of calls to the strong model needed
    to recover 50% and 80% of the quality gap (None when not reached)."""

    apgr: float
    cpt50: float | None
    cpt80: float | None


def gap_recovery(
    strong_shares: Sequence[float], accuracies: Sequence[float], weak_accuracy: float, strong_accuracy: float
) -> GapRecovery:
    """Performance gap recovered, PGR = (acc - weak) / (strong - weak), against the share of calls to the strong
    model, over a router's operating points; always-weak (0, 0) and always-strong (1, 1) are reachable too."""
    gap = strong_accuracy - weak_accuracy
    if gap <= 0:
        return GapRecovery(1.0, 0.0, 0.0)
    pgr = [(a - weak_accuracy) / gap for a in accuracies]
    xs, ys = [0.0, *strong_shares, 1.0], [0.0, *pgr, 1.0]
    hull = _upper_hull(xs, ys)

    def calls_to_reach(level: float) -> float | None:
        for (x1, y1), (x2, y2) in zip(hull, hull[1:], strict=False):
            if y1 >= level:
                return x1
            if y2 >= level:
                return x1 + (x2 - x1) * (level - y1) / (y2 - y1)
        return hull[-1][0] if hull[-1][1] >= level else None

    return GapRecovery(area_under_curve(xs, ys, 0.0, 1.0), calls_to_reach(0.5), calls_to_reach(0.8))
