"""Which per-query signal would reach best-single accuracy at half its cost on a family, and how far ours are.

    CAPPROF_DATA_DIR=... .venv/bin/python scripts/diagnose_cost_target.py --benchmark mmlu_pro --splits 3 \
        [--json docs/results/cost-target-mmlu_pro.json]

Per split (the harness's seeds, splits and best_single), each signal below routes every test query to the argmax of
P(correct) - lambda x cost (the true per-query costs, the harness's lambda grid) and reports its cost share at
best-single accuracy (docs/evaluation.md, "Cost at best-single accuracy: what it would take"):

- subject known: each model's training accuracy on the query's source subject (its domain's where the subject has
  fewer than 20 training queries): the topic signal at its best, labels given;
- difficulty known: a Rasch fit on every query, test ones included, so each test query's difficulty comes from
  all models' answers to it (an oracle no router has);
- difficulty known, subject abilities: the same difficulties, each model's ability fitted per subject on the
  training queries;
- heads: the built-in per-model heads on the MiniLM query embedding (unplaced);
- synthetic, kappa: the subject estimate moved toward each test outcome by kappa in log-odds, plus unit Gaussian
  noise: a made-up signal of known strength, to find the strength the target needs.

Beside each, the AUC with which it tells which of two models is right on the test queries where exactly one is: best
single against its rival, the cheapest model within 10 points of best single's training accuracy (none: no AUC).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profiling.embedder import SentenceEmbedder  # noqa: E402
from profiling.embedding_cache import CachedEmbedder  # noqa: E402
from profiling.evaluation import common_accuracy, cost_at_accuracy, curve  # noqa: E402
from profiling.model_heads import train_heads  # noqa: E402
from profiling.model_profile import rasch_fit, rasch_p  # noqa: E402
from service.jobs import evaluate as harness  # noqa: E402
from service.settings import Settings  # noqa: E402

Matrix = npt.NDArray[np.float64]
KAPPAS = (0.1, 0.2, 0.3, 0.4)
MIN_SUBJECT_QUERIES = 20
RIVAL_WITHIN = 0.10


def sigmoid(x: Matrix) -> Matrix:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def group_accuracy(
    outcomes: Matrix, train: list[int], test: list[int], subjects: np.ndarray, domains: np.ndarray
) -> Matrix:
    """(test x models) each model's training accuracy on the test query's subject, else its domain's, else overall."""
    estimate = np.tile(np.nanmean(outcomes[train], axis=0), (len(test), 1))
    for labels in (domains, subjects):  # subjects last: they overwrite their domain where they have the queries
        for label in np.unique(labels[test]):
            rows = [i for i in train if labels[i] == label]
            if len(rows) >= MIN_SUBJECT_QUERIES:
                estimate[labels[test] == label] = np.nanmean(outcomes[rows], axis=0)
    return np.nan_to_num(estimate, nan=0.0)


def subject_abilities(
    outcomes: Matrix, difficulty: Matrix, ability: Matrix, train: list[int], test: list[int], subjects: np.ndarray
) -> Matrix:
    """(test x models) ability per model and subject given the difficulties, Newton steps from the overall ability
    (a prior of weight 1 toward it); subjects with too few training queries keep the overall ability."""
    result = np.tile(ability, (len(test), 1))
    for label in np.unique(subjects[test]):
        rows = [i for i in train if subjects[i] == label]
        if len(rows) < MIN_SUBJECT_QUERIES:
            continue
        y, b = outcomes[rows], difficulty[rows]
        seen = ~np.isnan(y)
        theta = ability.copy()
        for _ in range(20):
            p = sigmoid(theta[None, :] - b[:, None])
            gradient = (np.where(seen, y - p, 0.0)).sum(axis=0) - (theta - ability)
            curvature = (np.where(seen, p * (1 - p), 0.0)).sum(axis=0) + 1.0
            theta += np.clip(gradient / curvature, -1.0, 1.0)
        result[subjects[test] == label] = theta
    return result


def discordant_auc(p_correct: Matrix, outcomes: Matrix, first: int, second: int) -> float | None:
    """AUC of p[second] - p[first] for `second` being the right one, over the queries where exactly one is right."""
    split = outcomes[:, first] != outcomes[:, second]
    if not split.any() or second == first:
        return None
    margin = p_correct[split, second] - p_correct[split, first]
    wins = outcomes[split, second] >= 0.5
    if wins.all() or not wins.any():
        return None
    ranks = np.argsort(np.argsort(margin, kind="stable"), kind="stable") + 1.0  # ties broken by order: fine here
    return float((ranks[wins].sum() - wins.sum() * (wins.sum() + 1) / 2) / (wins.sum() * (~wins).sum()))


def one_split(benchmark: str, data: Path, seed: int, embedder: CachedEmbedder) -> dict[str, Any]:
    family, split = harness.load_split(data, benchmark, seed, None)
    train, test = split.train_rows, split.test_rows
    outcomes, costs = split.outcomes, split.costs
    test_outcomes, test_costs = outcomes[test], costs[test]
    train_accuracy = common_accuracy(outcomes[train])
    single = int(np.argmax(train_accuracy))
    target = float(test_outcomes[:, single].mean())
    single_cost = float(test_costs[:, single].mean())
    mean_cost = np.nanmean(costs[train], axis=0)
    near = [j for j in range(len(split.models)) if train_accuracy[j] >= train_accuracy[single] - RIVAL_WITHIN]
    rival = min((j for j in near if j != single), key=lambda j: mean_cost[j], default=single)

    subjects = np.array([q.subject for q in family.queries])
    domains = np.array([q.domain for q in family.queries])
    by_subject = group_accuracy(outcomes, train, test, subjects, domains)
    ability, difficulty = rasch_fit(outcomes)
    vectors = embedder.embed([q.text for q in family.queries])
    heads = train_heads(vectors[train], outcomes[train], split.models, placed=False)
    signals: dict[str, Matrix] = {
        "subject known": by_subject,
        "difficulty known": rasch_p(ability, difficulty)[test],
        "difficulty known, subject abilities": sigmoid(
            subject_abilities(outcomes, difficulty, ability, train, test, subjects) - difficulty[test][:, None]
        ),
        "heads": heads.predict(vectors[test]),
    }
    logit = np.log(np.clip(by_subject, 1e-3, 1 - 1e-3) / (1 - np.clip(by_subject, 1e-3, 1 - 1e-3)))
    noise = np.random.default_rng(seed).normal(size=logit.shape)
    for kappa in KAPPAS:
        signals[f"synthetic, kappa {kappa}"] = sigmoid(logit + kappa * (2 * test_outcomes - 1) + noise)

    rows = {}
    for name, p_correct in signals.items():
        cost = cost_at_accuracy(curve(p_correct, test_costs, test_outcomes, test_costs), target)
        rows[name] = {
            "cost_share": None if cost is None else cost / single_cost,
            "auc_vs_rival": discordant_auc(p_correct, test_outcomes, single, rival),
        }
    return {
        "seed": seed,
        "best_single": split.models[single],
        "rival": split.models[rival],
        "best_single_accuracy": target,
        "signals": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings = Settings()
    embedder = CachedEmbedder(
        SentenceEmbedder(settings.device, settings.embed_batch_size), settings.embedding_cache_dir
    )
    results = [one_split(args.benchmark, args.data, seed, embedder) for seed in range(args.splits)]
    embedder.save()
    print(f"{args.benchmark}: best single {results[0]['best_single']}, rival {results[0]['rival']}")
    print(f"{'signal':40s} cost share at best-single accuracy, per split | AUC vs rival")
    for name in results[0]["signals"]:
        shares = [r["signals"][name]["cost_share"] for r in results]
        aucs = [r["signals"][name]["auc_vs_rival"] for r in results]
        share_text = " ".join("  --  " if s is None else f"{s:6.1%}" for s in shares)
        auc_text = " ".join("  -- " if a is None else f"{a:.3f}" for a in aucs)
        print(f"{name:40s} {share_text} | {auc_text}")
    if args.json:
        args.json.write_text(json.dumps({"benchmark": args.benchmark, "splits": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
