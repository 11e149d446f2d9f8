"""The typed result of routing one query: the choice, the ranked alternatives and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from profiling.query_profile import QueryProfile
from profiling.scoring import Alternative


@dataclass(frozen=True)
class Contribution:
    """How one model's utility splits: profile part per dimension, kNN part, cost part."""

    dimensions: dict[str, float]
    knn: float
    cost: float


@dataclass(frozen=True)
class Decision:
    decision_id: str
    model: str | None
    alternatives: list[Alternative]
    profile: QueryProfile
    cost_weight: float
    contributions: dict[str, Contribution] | None = None
    notes: list[str] = field(default_factory=list)
