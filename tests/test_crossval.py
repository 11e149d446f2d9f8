"""Cross-validation summary: means over splits, paired differences, and splits where a cost target is not reached."""

from __future__ import annotations

from typing import Any

import pytest

from service.jobs.crossval import markdown_summary, summarise


def report(seed: int, capprof: float, best: float, knn: float, capprof_cost: float | None) -> dict[str, Any]:
    routers = {
        "best_single": {"accuracy": best, "cost_per_query": 2.0},
        "plain_knn_k100": {"accuracy": knn, "cost_per_query": 1.5},
        "capprof": {"accuracy": capprof, "cost_per_query": 1.8},
    }
    return {
        "seed": seed,
        "routers": routers,
        "cost_at_best_single_accuracy": {"best_single": 2.0, "plain_knn_k100": None, "capprof": capprof_cost},
        "literature": {"capprof": {"aiq": 0.5}, "plain_knn_k100": {"aiq": 0.4}},
    }


def test_summary_pairs_capprof_with_each_baseline_split_by_split() -> None:
    summary = summarise(
        [report(0, 0.72, 0.70, 0.71, 1.0), report(1, 0.70, 0.70, 0.72, None), report(2, 0.75, 0.71, 0.70, 0.5)]
    )
    against_best = summary["capprof_against"]["best_single"]
    assert (against_best["wins"], against_best["ties"]) == (2, 1)
    assert against_best["mean"] == pytest.approx((0.02 + 0.0 + 0.04) / 3)
    against_knn = summary["capprof_against"]["plain_knn_k100"]
    assert (against_knn["wins"], against_knn["ties"], against_knn["min"]) == (2, 0, pytest.approx(-0.02))
    capprof = summary["routers"]["capprof"]
    # the cost share is averaged over the two splits that reach best_single's accuracy, and the miss is counted
    assert capprof["splits_reaching_best_single_accuracy"] == 2
    assert capprof["cost_share_at_best_single_accuracy"]["mean"] == pytest.approx((0.5 + 0.25) / 2)
    assert summary["routers"]["plain_knn_k100"]["cost_share_at_best_single_accuracy"] is None
    assert summary["routers"]["best_single"]["aiq"] is None


def test_markdown_summary_shows_losses_and_unreached_targets() -> None:
    summary = summarise([report(0, 0.70, 0.71, 0.69, None), report(1, 0.72, 0.71, 0.69, None)])
    text = markdown_summary("family", summary)
    assert "| best_single | +0.00 |" in text
    assert "1 / 0 / 1 |" in text  # one win, one loss against best_single
    assert "| capprof | 0.7100 (0.0141) | not reached | 0/2 |" in text
