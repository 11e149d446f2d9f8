"""The per-model heads lever, by cross-validation: is a per-query signal from the embeddings worth building in?

    CAPPROF_DATA_DIR=... .venv/bin/python scripts/lever_heads.py --benchmark mmlu_pro --splits 3 \
        [--json docs/results/lever-heads-mmlu_pro.json]

Per split (the harness's seeds and splits): capprof as `capprof evaluate` trains it (stage 1, Model-SAT, the
validation calibration), with the per-model heads' share in stage 1 (CAPPROF_HEADS_WEIGHT) set to each h in turn;
h = 0 is capprof without heads. Prints capprof's accuracy at lambda 0 against best_single and the plain kNN
(k = 100), and its cost share at best-single accuracy, per h. A measurement to choose the default share by.

With `--rank R [--rank-l2 L]` the heads are low-rank instead (docs/evaluation.md, levers): every model's weights
are R shared directions times its own R loadings (W = A x Theta), fitted jointly with L2 strength L on both factors,
then placed as the built-in heads are. Measured and not kept; the option stays so the row can be reproduced. Each
split also prints the heads' own log-loss on its test queries.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profiling.embedder import SentenceEmbedder  # noqa: E402
from profiling.embedding_cache import CachedEmbedder  # noqa: E402
from profiling.model_heads import HeadFitter, ModelHeads, fit_heads, smoothed_logits  # noqa: E402
from service.jobs import evaluate as harness  # noqa: E402
from service.settings import Settings  # noqa: E402

SHARES = (0.0, 0.25, 0.5, 0.75)


def low_rank_fitter(rank: int, l2: float) -> HeadFitter:
    """Fits heads whose weights share `rank` directions: log-loss over the records of each model with right and wrong
    ones (as `fit_heads`; the others get its constant head) + l2/2 x both factors' squares, by L-BFGS."""

    def fit(vectors: npt.ArrayLike, outcomes: npt.ArrayLike, keys: Sequence[str]) -> ModelHeads:
        x = torch.as_tensor(np.asarray(vectors, np.float64))
        y = np.asarray(outcomes, np.float64)
        known = ~np.isnan(y)
        right = np.where(known, y >= 0.5, False)
        both_kinds = (right.sum(axis=0) > 0) & (right.sum(axis=0) < known.sum(axis=0))
        generator = torch.Generator().manual_seed(0)
        directions = (0.01 * torch.randn((x.shape[1], rank), generator=generator, dtype=torch.float64)).requires_grad_()
        loadings = (0.01 * torch.randn((rank, len(keys)), generator=generator, dtype=torch.float64)).requires_grad_()
        prior = smoothed_logits(y)
        intercept = torch.as_tensor(prior.copy()).requires_grad_()
        target = torch.as_tensor(right.astype(np.float64))
        weight = torch.as_tensor((known & both_kinds).astype(np.float64))
        optimiser = torch.optim.LBFGS([directions, loadings, intercept], max_iter=300, line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            optimiser.zero_grad()
            logits = x @ directions @ loadings + intercept
            loss = nn.functional.binary_cross_entropy_with_logits(logits, target, weight, reduction="sum")
            total = loss + 0.5 * l2 * ((directions**2).sum() + (loadings**2).sum())
            total.backward()
            return total

        optimiser.step(objective)
        coef = np.where(both_kinds, (directions @ loadings).detach().numpy(), 0.0).T
        fitted = np.where(both_kinds, intercept.detach().numpy(), prior)
        return ModelHeads(tuple(keys), coef, fitted, known.sum(axis=0).astype(np.float64))

    return fit


def log_loss(heads: ModelHeads, vectors: npt.NDArray[np.float32], outcomes: npt.NDArray[np.float64]) -> float:
    """Mean log-loss of the heads alone over the known (query, model) pairs."""
    p, known = heads.predict(vectors), ~np.isnan(outcomes)
    right = outcomes[known] >= 0.5
    return float(-np.mean(np.where(right, np.log(p[known]), np.log(1 - p[known]))))


def one_split(
    data: Path, benchmark: str, seed: int, settings: Settings, embedder: CachedEmbedder, rank: tuple[int, float] | None
) -> dict[str, Any]:
    family, split = harness.load_split(data, benchmark, seed, None)
    vectors = embedder.embed([q.text for q in family.queries])
    embedder.save()
    test, train = split.test_rows, split.train_rows
    outcomes, costs = split.outcomes[test], split.costs[test]
    validation = harness.sat_validation_rows(split, seed)
    old, aptitude, _ = harness.split_aptitude(split, vectors, [])
    est, est_val = harness.stage1_estimates(
        harness.training_family(split, set(), set()), split, embedder, settings, vectors, validation
    )
    p_sat, p_sat_val, trust, _ = harness.train_sat(split, aptitude, vectors, embedder, old, seed, settings)
    visible = harness.visible_training_outcomes(split, [], set())
    fit = fit_heads if rank is None else low_rank_fitter(*rank)
    heads = harness.split_heads(split, vectors, visible, validation, settings, fit)
    _, single = harness.best_single(harness.common_accuracy(split.outcomes[train]), outcomes, costs)
    knn_p, knn_cost = harness.plain_knn(
        vectors[test], vectors[train], split.outcomes[train], split.costs[train], harness.PLAIN_KNN_K
    )
    knn = harness.realised(outcomes, costs, harness.choose_models(np.nan_to_num(knn_p), knn_cost, 0.0))
    k, weight = settings.reranker_top_k, settings.reranker_weight * trust
    result: dict[str, Any] = {
        "seed": seed,
        "best_single": single.accuracy,
        "plain_knn": knn.accuracy,
        "heads_test_log_loss": log_loss(heads, vectors[test], outcomes),
        "heads": {},
    }
    for share in SHARES:
        with_share = settings.model_copy(update={"heads_weight": share})
        blended = harness.with_heads(est, heads, vectors, test, with_share)
        blended_val = harness.with_heads(est_val, heads, vectors, validation, with_share)
        params = harness.ValidationSet.of(split, validation, blended_val, p_sat_val).fit_calibration(k, weight)
        choose = harness.capprof_chooser(blended.p_correct, p_sat, est.costs, k, weight, params)
        curve = harness.curve_of(choose, outcomes, costs, harness.DEFAULT_LAMBDAS)
        cost = harness.cost_at_accuracy(curve, single.accuracy)
        result["heads"][str(share)] = {
            "accuracy": curve[0].accuracy,
            "cost_share_at_best_single_accuracy": None if cost is None else cost / single.cost_per_query,
        }
    return result


def print_shares(splits: Sequence[dict[str, Any]], indent: str) -> None:
    """Per heads' share: capprof against best_single and the plain kNN, and its cost share, over the splits."""
    for share in SHARES:
        gaps = [(s["heads"][str(share)]["accuracy"] - s["best_single"]) * 100 for s in splits]
        over_knn = [(s["heads"][str(share)]["accuracy"] - s["plain_knn"]) * 100 for s in splits]
        costs = [c for s in splits if (c := s["heads"][str(share)]["cost_share_at_best_single_accuracy"]) is not None]
        wins, losses = sum(g > 1e-9 for g in gaps), sum(g < -1e-9 for g in gaps)
        print(
            f"{indent}h = {share}: best single {np.mean(gaps):+.2f} points ({wins}/{len(gaps) - wins - losses}/{losses}; "
            f"{', '.join(f'{g:+.2f}' for g in gaps)}), plain kNN {np.mean(over_knn):+.2f}, "
            f"cost share {np.mean(costs) if costs else float('nan'):.0%} ({len(costs)} of {len(splits)} splits)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rank", type=int, help="low-rank heads of this rank instead of the built-in ones")
    parser.add_argument("--rank-l2", type=float, default=3.0, help="L2 strength on both factors of low-rank heads")
    args = parser.parse_args()
    settings = Settings()
    embedder = CachedEmbedder(
        SentenceEmbedder(settings.device, settings.embed_batch_size), settings.embedding_cache_dir
    )
    rank = None if args.rank is None else (args.rank, args.rank_l2)
    splits = [one_split(args.data, args.benchmark, seed, settings, embedder, rank) for seed in range(args.splits)]
    print(f"{args.benchmark}, {args.splits} splits: capprof with the heads' share h in stage 1")
    losses = [s["heads_test_log_loss"] for s in splits]
    print(
        f"  the heads alone, log-loss on the test queries: {np.mean(losses):.4f} ({', '.join(f'{x:.4f}' for x in losses)})"
    )
    print_shares(splits, "  ")
    if args.json:
        args.json.write_text(
            json.dumps({"benchmark": args.benchmark, "low_rank": rank, "splits": splits}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
