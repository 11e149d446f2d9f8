"""Routes query vectors against the current RouterState: profile, estimate, constrain, rank."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from profiling.decision import Contribution, Decision
from profiling.knn import knn_estimate
from profiling.model_profile import COST_UNIT, profile_estimate
from profiling.query_profile import KINDS
from profiling.scoring import Constraints, allowed, estimate_costs, input_tokens, rank
from service.settings import Settings
from service.state import RouterState, load_state
from service.vector_store import VectorStore


class NoModelsError(RuntimeError):
    """No model is registered and active, so nothing can be routed."""


@dataclass(frozen=True)
class RouteOptions:
    cost_weight: float = 0.0
    constraints: Constraints = field(default_factory=Constraints)
    top_n: int = 3
    explain: bool = False


@dataclass(frozen=True)
class Estimates:
    """Per-batch intermediate arrays (batch x models unless noted)."""

    weights: npt.NDArray[np.float64]  # batch x dimensions
    votes: npt.NDArray[np.float64]  # batch x dimensions
    nearest: npt.NDArray[np.float32]  # batch
    p_profile: npt.NDArray[np.float64]
    p_knn: npt.NDArray[np.float64]
    knn_share: npt.NDArray[np.float64]
    p_correct: npt.NDArray[np.float64]
    costs: npt.NDArray[np.float64]


class RoutingEngine:
    """Holds the live RouterState; `reload` builds a new one and swaps it in atomically."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._state: RouterState | None = None
        self._reload_lock = threading.Lock()

    @property
    def state(self) -> RouterState:
        if self._state is None:
            raise NoModelsError("routing state not loaded")
        return self._state

    @property
    def loaded(self) -> bool:
        return self._state is not None

    def reload(self, session: Session, store: VectorStore) -> RouterState:
        with self._reload_lock:
            self._state = load_state(session, store, self.settings)
            return self._state

    def estimate(self, vectors: npt.NDArray[np.float32], chars: npt.NDArray[np.float64]) -> Estimates:
        """P(correct) and cost for every (query, model) pair, as matrix arithmetic."""
        state = self.state
        profiler = state.profiler
        weights, votes, nearest = profiler.profile_vectors(vectors)
        masks = [profiler.catalog.kind_masks[k] for k in KINDS]
        p_profile = profile_estimate(weights, state.profile, masks, state.means)
        rows, sims = state.queries.search(vectors, self.settings.knn_k)
        p_knn, support = knn_estimate(state.outcomes, rows, sims)
        knn_share = np.where(support > 0, self.settings.knn_weight, 0.0)
        p_correct = (1.0 - knn_share) * p_profile + knn_share * p_knn
        costs = estimate_costs(state.models, input_tokens(chars))
        return Estimates(weights, votes, nearest, p_profile, p_knn, knn_share, p_correct, costs)

    def decide(
        self, vectors: npt.NDArray[np.float32], chars: npt.NDArray[np.float64], options: Sequence[RouteOptions]
    ) -> list[Decision]:
        state = self.state
        if len(state.models) == 0:
            raise NoModelsError("no active model is registered")
        est = self.estimate(vectors, chars)
        decisions = []
        for row, opts in enumerate(options):
            one = slice(row, row + 1)
            mask = allowed(state.models, opts.constraints, est.costs[one])
            ranked = rank(state.models, est.p_correct[one], est.costs[one], opts.cost_weight, mask, opts.top_n)[0]
            profile = state.profiler.describe(est.weights[row], est.votes[row], float(est.nearest[row]))
            decisions.append(
                Decision(
                    decision_id=str(uuid.uuid4()),
                    model=ranked[0].model if ranked else None,
                    alternatives=ranked,
                    profile=profile,
                    cost_weight=opts.cost_weight,
                    contributions=self._explain(est, row, [a.model for a in ranked], opts.cost_weight)
                    if opts.explain
                    else None,
                )
            )
        return decisions

    def _explain(self, est: Estimates, row: int, models: list[str], cost_weight: float) -> dict[str, Contribution]:
        state = self.state
        catalog = state.profiler.catalog
        kinds_present = sum(float(est.weights[row, catalog.kind_masks[k]].sum() > 0) for k in KINDS) or 1.0
        column = {name: i for i, name in enumerate(state.models.names)}
        active = np.flatnonzero(est.weights[row] > 0)
        result = {}
        for name in models:
            m = column[name]
            share = 1.0 - est.knn_share[row, m]
            cost = est.costs[row, m]
            result[name] = Contribution(
                dimensions={
                    catalog.names[d]: float(share * est.weights[row, d] / kinds_present * state.profile[m, d])
                    for d in active
                },
                knn=float(est.knn_share[row, m] * est.p_knn[row, m]),
                cost=0.0 if np.isnan(cost) else float(-cost_weight * COST_UNIT * cost),
            )
        return result
