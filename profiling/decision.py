"""The typed result of routing one query: the choice, the ranked alternatives and why."""

from __future__ import annotations

from dataclasses import dataclass

from profiling.query_profile import QueryProfile
from profiling.scoring import Alternative


@dataclass(frozen=True)
class Contribution:
    """How one model's utility splits: profile part per dimension, kNN part, its head's part, the re-ranker's
    correction, cost part."""

    dimensions: dict[str, float]
    knn: float
    cost: float
    reranker: float = 0.0
    head: float = 0.0  # the model's head's part (its share times its P(correct)); 0 without a head
    calibration: float = 0.0  # what the calibration of P(correct) added (or took away)


@dataclass(frozen=True)
class Decision:
    decision_id: str
    model: str | None
    alternatives: list[Alternative]
    profile: QueryProfile
    cost_weight: float
    contributions: dict[str, Contribution] | None = None
    reranker_version: int | None = None
    preset: str | None = None  # the operating point that gave cost_weight, when one did
    # What the query would cost sent to the most expensive model, and to the best model on average (cost reports).
    baseline_max_cost_usd: float | None = None
    baseline_best_model: str | None = None
    baseline_best_cost_usd: float | None = None
