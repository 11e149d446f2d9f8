"""The per-model heads lever, by cross-validation: is a per-query signal from the embeddings worth building in?

    CAPPROF_DATA_DIR=... .venv/bin/python scripts/lever_heads.py --benchmark mmlu_pro --splits 3 \
        [--json docs/results/lever-heads-mmlu_pro.json]

Per split (the harness's seeds and splits): capprof as `capprof evaluate` trains it (stage 1, Model-SAT, the
validation calibration), with the per-model heads' share in stage 1 (CAPPROF_HEADS_WEIGHT) set to each h in turn;
h = 0 is capprof without heads. Prints capprof's accuracy at lambda 0 against best_single and the plain kNN
(k = 100), and its cost share at best-single accuracy, per h. A measurement to choose the default share by.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profiling.embedder import SentenceEmbedder  # noqa: E402
from profiling.embedding_cache import CachedEmbedder  # noqa: E402
from service.jobs import evaluate as harness  # noqa: E402
from service.settings import Settings  # noqa: E402

SHARES = (0.0, 0.25, 0.5, 0.75)


def one_split(data: Path, benchmark: str, seed: int, settings: Settings, embedder: CachedEmbedder) -> dict[str, Any]:
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
    heads = harness.split_heads(split, vectors, visible, validation, settings)
    _, single = harness.best_single(harness.common_accuracy(split.outcomes[train]), outcomes, costs)
    knn_p, knn_cost = harness.plain_knn(
        vectors[test], vectors[train], split.outcomes[train], split.costs[train], harness.PLAIN_KNN_K
    )
    knn = harness.realised(outcomes, costs, harness.choose_models(np.nan_to_num(knn_p), knn_cost, 0.0))
    k, weight = settings.reranker_top_k, settings.reranker_weight * trust
    result: dict[str, Any] = {"seed": seed, "best_single": single.accuracy, "plain_knn": knn.accuracy, "heads": {}}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings = Settings()
    embedder = CachedEmbedder(
        SentenceEmbedder(settings.device, settings.embed_batch_size), settings.embedding_cache_dir
    )
    splits = [one_split(args.data, args.benchmark, seed, settings, embedder) for seed in range(args.splits)]
    print(f"{args.benchmark}, {args.splits} splits: capprof with the heads' share h in stage 1")
    for share in SHARES:
        gaps = [(s["heads"][str(share)]["accuracy"] - s["best_single"]) * 100 for s in splits]
        over_knn = [(s["heads"][str(share)]["accuracy"] - s["plain_knn"]) * 100 for s in splits]
        costs = [c for s in splits if (c := s["heads"][str(share)]["cost_share_at_best_single_accuracy"]) is not None]
        wins, losses = sum(g > 1e-9 for g in gaps), sum(g < -1e-9 for g in gaps)
        print(
            f"  h = {share}: best single {np.mean(gaps):+.2f} points ({wins}/{len(gaps) - wins - losses}/{losses}; "
            f"{', '.join(f'{g:+.2f}' for g in gaps)}), plain kNN {np.mean(over_knn):+.2f}, "
            f"cost share {np.mean(costs) if costs else float('nan'):.0%} ({len(costs)} of {len(splits)} splits)"
        )
    if args.json:
        args.json.write_text(json.dumps({"benchmark": args.benchmark, "splits": splits}, indent=2) + "\n")


if __name__ == "__main__":
    main()
