"""Stage-1 choice for all models at once: expected cost, hard constraints, utility and ranking."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from profiling.model_profile import COST_UNIT

Matrix = npt.NDArray[np.float64]
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class ModelCatalog:
    """Routable models in column order, with what their cost estimate needs (NaN = unknown)."""

    names: tuple[str, ...]
    providers: tuple[str | None, ...]
    input_usd_per_mtok: Matrix
    output_usd_per_mtok: Matrix
    typical_output_tokens: Matrix
    mean_cost_usd: Matrix
    output_tokens_filled: Matrix = field(init=False, repr=False, compare=False)
    name_array: npt.NDArray[np.object_] = field(init=False, repr=False, compare=False)
    provider_array: npt.NDArray[np.object_] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Derived once per catalog, never per request.
        known = self.typical_output_tokens[np.isfinite(self.typical_output_tokens)]
        fallback = float(np.median(known)) if known.size else 0.0
        object.__setattr__(
            self,
            "output_tokens_filled",
            np.where(np.isnan(self.typical_output_tokens), fallback, self.typical_output_tokens),
        )
        object.__setattr__(self, "name_array", np.array(self.names, dtype=object))
        # casefolded: "Acme" and "acme" are one provider to whoever excludes it
        object.__setattr__(
            self, "provider_array", np.array([(p or "").casefold() for p in self.providers], dtype=object)
        )

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class Constraints:
    candidates: frozenset[str] | None = None
    max_cost_usd: float | None = None
    exclude_models: frozenset[str] = field(default_factory=frozenset)
    exclude_providers: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Alternative:
    model: str
    utility: float
    p_correct: float
    cost_usd: float | None
    cost_imputed: bool = False  # no prices and no observed cost: cost_usd is the median of the other models'


def input_tokens(texts_chars: npt.NDArray[np.float64]) -> Matrix:
    return texts_chars / CHARS_PER_TOKEN


def estimate_costs(catalog: ModelCatalog, tokens_in: Matrix) -> Matrix:
    """(batch x models) USD per query: prices x (input tokens, typical output), else the mean observed cost."""
    typical_out: Matrix = catalog.output_tokens_filled
    priced = (
        tokens_in[:, None] * catalog.input_usd_per_mtok[None, :] + (typical_out * catalog.output_usd_per_mtok)[None, :]
    ) / 1e6
    return np.where(np.isnan(priced), catalog.mean_cost_usd[None, :], priced)


def allowed(catalog: ModelCatalog, constraints: Constraints, costs: Matrix) -> npt.NDArray[np.bool_]:
    """(batch x models) mask of models that satisfy every hard constraint."""
    names = catalog.name_array
    mask = np.ones(len(catalog), dtype=bool)
    if constraints.candidates is not None:
        mask &= np.isin(names, list(constraints.candidates))
    if constraints.exclude_models:
        mask &= ~np.isin(names, list(constraints.exclude_models))
    if constraints.exclude_providers:
        mask &= ~np.isin(catalog.provider_array, [p.casefold() for p in constraints.exclude_providers])
    batch_mask = np.broadcast_to(mask, costs.shape).copy()
    if constraints.max_cost_usd is not None:
        batch_mask &= ~np.isnan(costs) & (costs <= constraints.max_cost_usd)
    return batch_mask


def impute_costs(costs: Matrix) -> Matrix:
    """An unknown cost counts as the row's median of the known ones (0 when none is known)."""
    unknown = np.isnan(costs)
    if not unknown.any():
        return costs
    median = np.nanmedian(np.where(unknown.all(axis=1, keepdims=True), 0.0, costs), axis=1, keepdims=True)
    return np.where(unknown, median, costs)


def utility(p_correct: Matrix, costs: Matrix, cost_weight: float) -> Matrix:
    """P(correct) - lambda * cost per 1,000 queries, with unknown costs imputed (impute_costs)."""
    return p_correct - cost_weight * COST_UNIT * impute_costs(costs)


def stage2_top_k(stage1_utility: Matrix, eligible: npt.NDArray[np.bool_], k: int) -> npt.NDArray[np.bool_]:
    """(batch x models) mask of the k eligible models with the best stage-1 utility per query."""
    scores = np.where(eligible, stage1_utility, -np.inf)
    top = np.zeros_like(eligible)
    if scores.shape[1] == 0:
        return top
    k = min(k, scores.shape[1])
    picked = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    np.put_along_axis(top, picked, True, axis=1)
    return top & eligible


def blend(stage1: Matrix, stage2: Matrix, rerank: npt.NDArray[np.bool_], weight: float | Matrix) -> Matrix:
    """P(correct) after stage 2: stage 1 plus the scorer's correction, centred per query.

    On re-ranked models the correction is `weight` x (scorer - stage 1) less its weighted mean over the query's
    re-ranked models; elsewhere stage 1 stands. Centring keeps what the scorer says about which model suits this
    query and drops what it says about all of them at once: measured in the onboarding sweep, that level shift moved
    re-scored models against new and stage-1-only ones and was what misled onboarding (docs/evaluation.md).
    `weight` is the scorer's share, one for all models or one per model (column)."""
    return stage1 + scorer_correction(stage1, stage2, rerank, weight)


def scorer_correction(stage1: Matrix, stage2: Matrix, rerank: npt.NDArray[np.bool_], weight: float | Matrix) -> Matrix:
    """(batch x models) what stage 2 adds to stage 1 (see blend): 0 outside the re-ranked models."""
    share = np.where(rerank, np.broadcast_to(weight, stage1.shape), 0.0)
    delta = np.where(rerank, stage2 - stage1, 0.0)
    total = share.sum(axis=1, keepdims=True)
    level = np.divide((share * delta).sum(axis=1, keepdims=True), total, out=np.zeros_like(total), where=total > 0)
    return np.where(rerank, share * (delta - level), 0.0)


def rank(
    catalog: ModelCatalog,
    p_correct: Matrix,
    costs: Matrix,
    cost_weight: float,
    mask: npt.NDArray[np.bool_],
    top_n: int,
) -> list[list[Alternative]]:
    """Best final utility first per query (ties go to the cheaper model); models outside the mask never appear.

    Re-ranked and stage-1-only models compete on the same scale: a model without aptitude results keeps its
    stage-1 estimate and can still win.
    """
    scores = np.where(mask, utility(p_correct, costs, cost_weight), -np.inf)
    imputed = impute_costs(costs)
    results: list[list[Alternative]] = []
    for row in range(len(scores)):
        allowed_count = int(mask[row].sum())
        if allowed_count == 0:
            results.append([])
            continue
        n = min(top_n, allowed_count)
        if n < scores.shape[1]:
            # The n best by utility and everything tied with the n-th (for the cost tie-break).
            kth = np.partition(scores[row], -n)[-n]
            # `& mask`: when an allowed model's utility is -inf, kth is -inf and would let every model through
            candidates = np.flatnonzero((scores[row] >= kth) & mask[row])
        else:
            candidates = np.flatnonzero(mask[row])
        cand_cost = np.nan_to_num(costs[row, candidates], nan=np.inf)
        order = candidates[np.lexsort((cand_cost, -scores[row, candidates]))][:n]
        results.append(
            [
                Alternative(
                    model=catalog.names[col],
                    utility=float(scores[row, col]),
                    p_correct=float(p_correct[row, col]),
                    cost_usd=float(imputed[row, col]),
                    cost_imputed=bool(np.isnan(costs[row, col])),
                )
                for col in order
            ]
        )
    return results
