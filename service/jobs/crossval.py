"""`capprof evaluate --splits N`: the evaluation repeated over N random 70/30 splits, summarised.

One split can flatter a routing idea (one choice of test queries looked fine and the next did not), so a lever is
judged by its mean over splits and by how often it wins, never by one figure. Each split is a full `evaluate` run
(its own report under `split-<seed>/`); this module only gathers them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from profiling.embedding_cache import CachedEmbedder
from service.jobs.evaluate import PLAIN_KNN_K, evaluate
from service.settings import Settings

CAPPROF = "capprof"
BASELINES = ("best_single", f"plain_knn_k{PLAIN_KNN_K}")


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one split), min and max."""
    a = np.asarray(values, np.float64)
    sd = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return {"mean": float(a.mean()), "sd": sd, "min": float(a.min()), "max": float(a.max())}


def summarise(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per router: accuracy at lambda 0 and the share of best_single's cost at which it reaches best_single's
    accuracy, over the splits; and capprof's paired difference against each baseline (same split, same queries)."""
    routers = list(reports[0]["routers"])
    summary: dict[str, Any] = {"splits": [r["seed"] for r in reports], "routers": {}, "capprof_against": {}}
    for name in routers:
        accuracy = [r["routers"][name]["accuracy"] for r in reports]
        shares = []
        for r in reports:
            cost = r["cost_at_best_single_accuracy"].get(name)
            best = r["routers"]["best_single"]["cost_per_query"]
            shares.append(None if cost is None or not best else cost / best)
        reached = [s for s in shares if s is not None]
        aiq = [r["literature"][name]["aiq"] for r in reports if name in r.get("literature", {})]
        summary["routers"][name] = {
            "accuracy": _mean_sd(accuracy),
            "cost_share_at_best_single_accuracy": _mean_sd(reached) if reached else None,
            "splits_reaching_best_single_accuracy": len(reached),
            "aiq": _mean_sd(aiq) if aiq else None,
        }
    for baseline in BASELINES:
        diffs = [r["routers"][CAPPROF]["accuracy"] - r["routers"][baseline]["accuracy"] for r in reports]
        stats = _mean_sd(diffs)
        stats["standard_error"] = stats["sd"] / math.sqrt(len(diffs))
        stats["wins"] = sum(d > 1e-12 for d in diffs)
        stats["ties"] = sum(abs(d) <= 1e-12 for d in diffs)
        summary["capprof_against"][baseline] = stats
    return summary


def markdown_summary(benchmark: str, summary: dict[str, Any]) -> str:
    n = len(summary["splits"])
    lines = [
        f"# {benchmark}: routers over {n} random 70/30 splits (seeds {', '.join(map(str, summary['splits']))})",
        "",
        "Mean (sd) over the splits. Cost share: the cheapest point of the router's lambda curve that reaches",
        "best_single's accuracy, as a share of best_single's cost, over the splits where it is reached.",
        "",
        "| router | accuracy at lambda 0 | cost share at best-single accuracy | splits reaching it | AIQ |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in summary["routers"].items():
        acc = row["accuracy"]
        share = row["cost_share_at_best_single_accuracy"]
        aiq = row["aiq"]
        lines.append(
            f"| {name} | {acc['mean']:.4f} ({acc['sd']:.4f}) | "
            + (f"{share['mean']:.0%} ({share['sd']:.0%})" if share else "not reached")
            + f" | {row['splits_reaching_best_single_accuracy']}/{n} | "
            + (f"{aiq['mean']:.4f}" if aiq else "")
            + " |"
        )
    lines += ["", "capprof at lambda 0 minus each baseline, paired by split (points):", ""]
    lines += [
        "| baseline | mean | standard error | worst | wins / ties / losses |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for baseline, d in summary["capprof_against"].items():
        losses = n - d["wins"] - d["ties"]
        lines.append(
            f"| {baseline} | {100 * d['mean']:+.2f} | {100 * d['standard_error']:.2f} | {100 * d['min']:+.2f} | "
            f"{d['wins']} / {d['ties']} / {losses} |"
        )
    return "\n".join(lines) + "\n"


def cross_validate(
    data: Path,
    benchmark: str,
    out: Path,
    settings: Settings,
    embedder: CachedEmbedder,
    seeds: Sequence[int],
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    reports = []
    for seed in seeds:
        log(f"== split {seed} ==")
        reports.append(
            evaluate(data, benchmark, out / f"split-{seed}", settings, embedder, seed, log=log, progress=False)
        )
    summary = summarise(reports)
    summary["benchmark"] = benchmark
    out.mkdir(parents=True, exist_ok=True)
    (out / "crossval.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "crossval.md").write_text(markdown_summary(benchmark, summary))
    return summary
