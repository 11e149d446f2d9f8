"""Routes query vectors against the current RouterState: profile, estimate, constrain, rank."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from profiling.calibration import calibrate
from profiling.decision import Contribution, Decision
from profiling.knn import knn_estimate
from profiling.model_heads import blend_heads
from profiling.model_profile import COST_UNIT, profile_estimate
from profiling.model_sat import ModelSat
from profiling.operating_points import DEFAULT_PRESET
from profiling.query_profile import KINDS
from profiling.scoring import (
    Constraints,
    allowed,
    estimate_costs,
    impute_costs,
    input_tokens,
    rank,
    scorer_correction,
    stage2_top_k,
    utility,
)
from service.routing.stage2 import Stage2, fill_in_heads, load_stage2
from service.routing.state import RouterState, load_state, refresh_state
from service.settings import Settings
from service.store.generation import DIMENSION, EVALUATIONS, PRESETS, Change
from service.store.vector_store import VectorStore


class NoModelsError(RuntimeError):
    """No model is registered and active, so nothing can be routed."""


class PresetError(ValueError):
    """A preset was named that this deployment has not calibrated."""


def resolve_cost_weight(
    cost_weight: float | None, preset: str | None, presets: dict[str, float]
) -> tuple[float, str | None]:
    """lambda and the preset it came from: the given lambda, else the named preset, else the default preset
    (balanced) once presets are calibrated, else 0 (pure quality)."""
    if cost_weight is not None:
        return cost_weight, None
    if preset is not None:
        if preset not in presets:
            raise PresetError(
                f"preset: {preset!r} is not calibrated yet (run `capprof presets calibrate`); give lambda instead"
            )
        return presets[preset], preset
    if DEFAULT_PRESET in presets:
        return presets[DEFAULT_PRESET], DEFAULT_PRESET
    return 0.0, None


@dataclass(frozen=True)
class RouteOptions:
    cost_weight: float = 0.0
    constraints: Constraints = field(default_factory=Constraints)
    top_n: int = 3
    explain: bool = False
    preset: str | None = None


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
    p_heads: npt.NDArray[np.float64] | None = None  # the per-model heads' P(correct), when a checkpoint has them
    head_share: npt.NDArray[np.float64] | None = None  # models: each head's share in p_correct


class RoutingEngine:
    """Holds the live RouterState; `reload` builds a new one and swaps it in atomically."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._state: RouterState | None = None
        self._reload_lock = threading.Lock()
        self._scorers: dict[int, ModelSat] = {}  # loaded checkpoint weights, by version

    @property
    def state(self) -> RouterState:
        if self._state is None:
            raise NoModelsError("routing state not loaded")
        return self._state

    @property
    def loaded(self) -> bool:
        return self._state is not None

    def reload(self, session: Session, store: VectorStore, generation: int = 0) -> RouterState:
        with self._reload_lock:
            state = load_state(session, store, self.settings, generation)
            self._state = replace(state, stage2=self._loaded_stage2(session, state))
            return self._state

    def _loaded_stage2(self, session: Session, state: RouterState) -> Stage2 | None:
        """The active checkpoint for `state`'s models, with the heads it lacks filled in from `state`'s records."""
        return self._filled_in(load_stage2(session, self.settings, state.model_ids, self._scorers), state)

    def _filled_in(self, stage2: Stage2 | None, state: RouterState) -> Stage2 | None:
        if state.query_index is None or state.raw_outcomes is None:
            return stage2
        return fill_in_heads(stage2, self.settings, state.query_index.vectors, state.raw_outcomes, state.means)

    @property
    def generation(self) -> int | None:
        """The routing-state generation being served (None before the first load)."""
        return self._state.generation if self._state is not None else None

    def refresh(
        self, session: Session, store: VectorStore, generation: int, changes: Sequence[Change] | None
    ) -> RouterState:
        """Applies the changes up to `generation` (None: unknown, reload in full), then swaps the new state in.

        Requests keep the state they started with; the swap is one attribute assignment.
        """
        with self._reload_lock:
            old = self._state
            if old is None or changes is None:
                state = load_state(session, store, self.settings, generation)
            elif old.generation >= generation:
                return old
            else:
                state = refresh_state(session, store, self.settings, old, changes, generation)
            same_models = old is not None and np.array_equal(old.model_ids, state.model_ids)
            kinds = {c.kind for c in changes} if changes is not None else set()
            if changes is not None and same_models and kinds <= {EVALUATIONS, DIMENSION, PRESETS}:
                stage2 = old.stage2 if old is not None else None  # aptitude and checkpoint untouched
                if EVALUATIONS in kinds:
                    stage2 = self._filled_in(stage2, state)  # a model without a checkpoint head got records
            else:
                stage2 = self._loaded_stage2(session, state)
            self._state = replace(state, stage2=stage2)
            return self._state

    def _stage2(
        self,
        est: Estimates,
        vectors: npt.NDArray[np.float32],
        row: int,
        opts: RouteOptions,
        mask: npt.NDArray[np.bool_],
        state: RouterState,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], dict[int, float]]:
        """Re-rank this query's stage-1 top-K with Model-SAT: (P(correct), re-ranked mask, the scorer's correction
        by re-ranked column)."""
        stage2 = state.stage2
        p_stage1 = est.p_correct[row : row + 1]
        if stage2 is None:
            return p_stage1, np.zeros_like(mask), {}
        top = stage2_top_k(
            utility(p_stage1, est.costs[row : row + 1], opts.cost_weight),
            mask & stage2.has_aptitude,
            self.settings.reranker_top_k,
        )
        columns = np.flatnonzero(top[0])
        if columns.size == 0:
            return p_stage1, top, {}
        p_sat = np.zeros_like(p_stage1)
        p_sat[0, columns] = stage2.scorer.predict(vectors[row : row + 1], stage2.model_embeddings[columns])[0]
        correction = scorer_correction(p_stage1, p_sat, top, self.reranker_shares(stage2))
        return p_stage1 + correction, top, {int(c): float(correction[0, c]) for c in columns}

    def reranker_shares(self, stage2: Stage2) -> npt.NDArray[np.float64]:
        """Per model, the scorer's share in re-ranked P(correct): the setting, less for models unlike its training set."""
        return self.settings.reranker_weight * stage2.trust

    def estimate(
        self,
        vectors: npt.NDArray[np.float32],
        chars: npt.NDArray[np.float64],
        own_rows: npt.NDArray[np.int64] | None = None,
        state: RouterState | None = None,
    ) -> Estimates:
        """P(correct) and cost for every (query, model) pair, as matrix arithmetic.

        own_rows: for evaluated queries (calibration), each query's own row in the outcome table, left out of its
        neighbours so that its outcome does not vote for itself. state: the snapshot to use (default: the live one).
        """
        state = state or self.state
        profiler = state.profiler
        weights, votes, nearest = profiler.profile_vectors(vectors)
        masks = [profiler.catalog.kind_masks[k] for k in KINDS]
        p_profile = profile_estimate(weights, state.profile, masks, state.means)
        if own_rows is None:
            rows, sims = state.queries.search(vectors, self.settings.knn_k)
        else:
            rows, sims = state.queries.search(vectors, self.settings.knn_k + 1)
            sims = np.where(rows == own_rows[:, None], 0.0, sims).astype(np.float32)
        p_knn, support = knn_estimate(state.outcomes, rows, sims)
        # The kNN estimate weighs in by how much neighbour evidence it has (a model onboarded from its aptitude
        # test has few evaluated neighbours), like the profile's shrinkage toward the mean.
        knn_share = self.settings.knn_weight * support / (support + self.settings.knn_shrinkage + 1e-12)
        p_correct = (1.0 - knn_share) * p_profile + knn_share * p_knn
        costs = estimate_costs(state.models, input_tokens(chars))
        stage2 = state.stage2
        p_heads = head_share = None
        if stage2 is not None and stage2.heads is not None and stage2.head_shares is not None:
            p_heads, head_share = stage2.heads.predict(vectors), stage2.head_shares
            p_correct = blend_heads(p_correct, p_heads, head_share)
        return Estimates(weights, votes, nearest, p_profile, p_knn, knn_share, p_correct, costs, p_heads, head_share)

    def decide(
        self, vectors: npt.NDArray[np.float32], chars: npt.NDArray[np.float64], options: Sequence[RouteOptions]
    ) -> list[Decision]:
        state = self.state  # one snapshot for the whole batch: a refresh may swap in another meanwhile
        if len(state.models) == 0:
            raise NoModelsError("no active model is registered")
        est = self.estimate(vectors, chars, state=state)
        best_average = int(np.nanargmax(state.means)) if np.isfinite(state.means).any() else None
        decisions = []
        for row, opts in enumerate(options):
            one = slice(row, row + 1)
            mask = allowed(state.models, opts.constraints, est.costs[one])
            p_blended, _, corrections = self._stage2(est, vectors, row, opts, mask, state)
            p_final = calibrate(p_blended, state.p_calibration)
            ranked = rank(state.models, p_final, est.costs[one], opts.cost_weight, mask, opts.top_n)[0]
            profile = state.profiler.describe(est.weights[row], est.votes[row], float(est.nearest[row]))
            max_cost, best_model, best_cost = _baselines(state, est.costs[row], best_average)
            decisions.append(
                Decision(
                    decision_id=str(uuid.uuid4()),
                    model=ranked[0].model if ranked else None,
                    alternatives=ranked,
                    profile=profile,
                    cost_weight=opts.cost_weight,
                    contributions=self._explain(
                        est,
                        row,
                        [a.model for a in ranked],
                        opts.cost_weight,
                        corrections,
                        (p_final - p_blended)[0],
                        state,
                    )
                    if opts.explain
                    else None,
                    # the checkpoint that shaped the choice: its scorer re-ranked, or its heads moved stage 1
                    reranker_version=state.stage2.version
                    if state.stage2 is not None and (corrections or est.p_heads is not None)
                    else None,
                    preset=opts.preset,
                    baseline_max_cost_usd=max_cost,
                    baseline_best_model=best_model,
                    baseline_best_cost_usd=best_cost,
                )
            )
        return decisions

    def _explain(
        self,
        est: Estimates,
        row: int,
        models: list[str],
        cost_weight: float,
        corrections: dict[int, float],
        calibration: npt.NDArray[np.float64],
        state: RouterState,
    ) -> dict[str, Contribution]:
        catalog = state.profiler.catalog
        kinds_present = max(1, sum(int(est.weights[row][catalog.kind_masks[k]].sum() > 0) for k in KINDS))
        column = {name: i for i, name in enumerate(state.models.names)}
        active = np.flatnonzero(est.weights[row] > 0)
        result = {}
        for name in models:
            m = column[name]
            head_share = 0.0 if est.head_share is None else float(est.head_share[m])
            stage1_share = 1.0 - head_share
            profile_share = stage1_share * (1.0 - est.knn_share[row, m])
            cost = impute_costs(est.costs[row : row + 1])[0, m]
            result[name] = Contribution(
                dimensions={
                    catalog.names[d]: float(profile_share * est.weights[row, d] / kinds_present * state.profile[m, d])
                    for d in active
                },
                knn=float(stage1_share * est.knn_share[row, m] * est.p_knn[row, m]),
                head=0.0 if est.p_heads is None else float(head_share * est.p_heads[row, m]),
                cost=float(-cost_weight * COST_UNIT * cost),
                reranker=corrections.get(m, 0.0),
                calibration=float(calibration[m]),
            )
        return result


def _baselines(
    state: RouterState, costs: npt.NDArray[np.float64], best_average: int | None
) -> tuple[float | None, str | None, float | None]:
    """The query's estimated cost on the most expensive model, and the best model on average and its cost."""
    known = costs[~np.isnan(costs)]
    best_cost = float(costs[best_average]) if best_average is not None else float("nan")
    return (
        float(known.max()) if known.size else None,
        state.models.names[best_average] if best_average is not None else None,
        None if np.isnan(best_cost) else best_cost,
    )
