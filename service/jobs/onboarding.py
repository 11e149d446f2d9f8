"""`capprof evaluate --onboarding-sweep`: does zero-shot onboarding hold for ANY new model, not one lucky choice?

Every model is held out in turn, then several random groups of 2-4 models. For each choice, capprof is trained
with the new models known only by their answers to the aptitude items (built from the other models' outcomes),
and compared at lambda 0 with capprof trained on everything: the gap in accuracy, and the share of test queries
routed to the new models against the share the oracle (cheapest correct model) would give them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from profiling.embedding_cache import CachedEmbedder
from profiling.evaluation import choose_reranked, oracle_choice, realised
from service.jobs.evaluate import (
    load_split,
    sat_validation_rows,
    split_aptitude,
    split_heads,
    stage1_estimates,
    train_sat,
    training_family,
    visible_training_outcomes,
    with_heads,
)
from service.settings import Settings


def held_out_choices(models: list[str], random_groups: int, seed: int) -> list[list[str]]:
    """Each model alone, then `random_groups` distinct random groups of 2 to 4 models, always leaving two or more."""
    choices = [[m] for m in models]
    rng = np.random.default_rng(seed)
    seen: set[tuple[str, ...]] = set()
    largest = min(4, len(models) - 2)  # at least two models stay to build the aptitude test from
    for _ in range(random_groups * 20):
        if len(seen) >= random_groups or largest < 2:
            break
        size = int(rng.integers(2, largest + 1))
        group = tuple(sorted(rng.choice(models, size=size, replace=False).tolist()))
        if group not in seen:
            seen.add(group)
            choices.append(list(group))
    return choices


def onboarding_sweep(
    data: Path,
    benchmark: str,
    out: Path,
    settings: Settings,
    embedder: CachedEmbedder,
    seed: int = 0,
    random_groups: int = 6,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    family, split = load_split(data, benchmark, seed, None)
    vectors = embedder.embed([q.text for q in family.queries])
    embedder.save()
    test = split.test_rows
    outcomes, costs = split.outcomes[test], split.costs[test]
    oracle_picks = oracle_choice(outcomes, costs)
    k = settings.reranker_top_k
    validation = sat_validation_rows(split, seed)

    def capprof_choice(new: list[str]) -> np.ndarray:
        old, aptitude, aptitude_rows = split_aptitude(split, vectors, new)
        est, _ = stage1_estimates(training_family(split, set(new), aptitude_rows), split, embedder, settings, vectors)
        visible = visible_training_outcomes(split, new, aptitude_rows)
        est = with_heads(est, split_heads(split, vectors, visible, validation, settings), vectors, test, settings)
        p_sat, _, trust, _ = train_sat(split, aptitude, vectors, embedder, old, seed, settings)
        return choose_reranked(est.p_correct, p_sat, est.costs, 0.0, k, settings.reranker_weight * trust)

    log(f"{benchmark}: training capprof on everything (full information) ...")
    full = realised(outcomes, costs, capprof_choice([]))
    choices = held_out_choices(split.models, random_groups, seed)
    rows = []
    for new in tqdm(choices, desc=f"onboarding {benchmark}", unit="choice", disable=not progress):
        choice = capprof_choice(new)
        point = realised(outcomes, costs, choice)
        columns = [split.models.index(m) for m in new]
        rows.append(
            {
                "new_models": new,
                "aptitude_only_accuracy": point.accuracy,
                "gap_points": (full.accuracy - point.accuracy) * 100,
                "share_routed_to_new_models": float(np.isin(choice, columns).mean()),
                "oracle_share_to_new_models": float(np.isin(oracle_picks, columns).mean()),
            }
        )
    gaps = np.array([r["gap_points"] for r in rows])
    report: dict[str, Any] = {
        "benchmark": benchmark,
        "seed": seed,
        "n_test": len(test),
        "full_information_accuracy": full.accuracy,
        "choices": rows,
        "mean_gap_points": float(gaps.mean()),
        "worst_gap_points": float(gaps.max()),
        "targets": {"mean_gap_points": 1.0, "worst_gap_points": 2.0},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "onboarding.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "onboarding.md").write_text(onboarding_markdown(report))
    return report


def onboarding_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# {report['benchmark']}: onboarding new models from their aptitude answers alone",
        "",
        f"Full information accuracy at lambda 0: {report['full_information_accuracy']:.4f} "
        f"({report['n_test']} test queries, seed {report['seed']}). Gap = full information minus aptitude-only, "
        f"in accuracy points: mean {report['mean_gap_points']:.2f}, worst {report['worst_gap_points']:.2f} "
        f"(targets: mean <= 1, worst <= 2).",
        "",
        "| new models | aptitude-only accuracy | gap (points) | routed to them | oracle would route |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in report["choices"]:
        lines.append(
            f"| {', '.join(row['new_models'])} | {row['aptitude_only_accuracy']:.4f} | {row['gap_points']:.2f} | "
            f"{row['share_routed_to_new_models']:.1%} | {row['oracle_share_to_new_models']:.1%} |"
        )
    return "\n".join(lines) + "\n"
