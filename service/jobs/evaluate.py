"""`capprof evaluate`: every router against the baselines on held-out queries of one benchmark family.

The capprof routers are trained with the service's own code (importer, profiles, routing engine) on a
scratch SQLite + in-memory Qdrant holding the training rows only; test queries never reach training.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from tqdm import tqdm

from profiling.aptitude import AptitudeTest, build_aptitude_test
from profiling.calibration import calibrate, fit_probability_calibration, reliability
from profiling.dataset import Family, OutcomeRow, read_family
from profiling.embedding_cache import CachedEmbedder
from profiling.evaluation import (
    DEFAULT_LAMBDAS,
    CurvePoint,
    Point,
    aiq,
    best_single,
    choose_reranked,
    common_accuracy,
    cost_at_accuracy,
    curve_of,
    gap_recovery,
    is_test,
    oracle,
    plain_knn,
    random_router,
    realised,
    reranked_p_correct,
)
from profiling.evaluation import choose as choose_models
from profiling.model_heads import HeadFitter, ModelHeads, blend_heads, fit_heads, train_heads
from profiling.model_sat import (
    ModelSatConfig,
    aptitude_vectors,
    evidence_trust,
    expected_calibration_error,
    train_model_sat,
)
from profiling.operating_points import choose_operating_points
from service.registry.importer import import_families
from service.routing.engine import Estimates
from service.runtime import Runtime, upgrade_database
from service.settings import Settings
from service.store.orm import EvalQuery

Matrix = npt.NDArray[np.float64]
PLAIN_KNN_K = 100
"""k of the plain kNN baseline (all models, full information), as in published router comparisons."""


class EvaluationError(ValueError):
    pass


@dataclass(frozen=True)
class Split:
    family: Family
    models: list[str]
    train_rows: list[int]
    test_rows: list[int]
    outcomes: Matrix  # all queries x models, NaN = missing
    costs: Matrix
    dropped_test: int


def _matrices(family: Family) -> tuple[list[str], Matrix, Matrix]:
    models = [m.name for m in family.models]
    column = {m: i for i, m in enumerate(models)}
    row = {q.query_id: i for i, q in enumerate(family.queries)}
    outcomes = np.full((len(family.queries), len(models)), np.nan)
    costs = np.full_like(outcomes, np.nan)
    for o in family.outcomes:
        outcomes[row[o.query_id], column[o.model]] = o.score
        costs[row[o.query_id], column[o.model]] = np.nan if o.cost_usd is None else o.cost_usd
    return models, outcomes, costs


def split_family(family: Family, seed: int, test_ids: set[str] | None) -> Split:
    models, outcomes, costs = _matrices(family)
    if test_ids is not None:
        unknown = test_ids - {q.query_id for q in family.queries}
        if unknown:
            raise EvaluationError(
                f"--test-ids: {len(unknown)} ids are not in the benchmark, e.g. {sorted(unknown)[:3]}"
            )
    chosen = [
        i
        for i, q in enumerate(family.queries)
        if (q.query_id in test_ids if test_ids is not None else is_test(q.query_id, seed))
    ]
    complete = np.asarray(~np.isnan(outcomes).any(axis=1) & ~np.isnan(costs).any(axis=1), dtype=bool)
    test_rows = [i for i in chosen if complete[i]]
    test_set = set(chosen)
    train_rows = [i for i in range(len(family.queries)) if i not in test_set]
    return Split(family, models, train_rows, test_rows, outcomes, costs, len(chosen) - len(test_rows))


def load_split(data: Path, benchmark: str, seed: int, test_ids: set[str] | None) -> tuple[Family, Split]:
    """The family and its train/test split; refused when either side would be empty."""
    family = read_family(data / benchmark)
    split = split_family(family, seed, test_ids)
    if not split.test_rows or not split.train_rows:
        raise EvaluationError("the split left no training or no test queries")
    return family, split


def training_family(split: Split, new_models: set[str], aptitude_rows: set[int]) -> Family:
    """Training rows only; a new model keeps nothing but its outcomes on the aptitude items."""
    family = split.family
    train_ids = {family.queries[i].query_id for i in split.train_rows}
    aptitude_ids = {family.queries[i].query_id for i in aptitude_rows}

    def keep(o: OutcomeRow) -> bool:
        return o.query_id in train_ids and (o.model not in new_models or o.query_id in aptitude_ids)

    return Family(
        name=family.name,
        path=family.path,
        models=family.models,
        queries=[family.queries[i] for i in split.train_rows],
        outcomes=[o for o in family.outcomes if keep(o)],
    )


def sat_validation_rows(split: Split, seed: int) -> list[int]:
    """Training rows Model-SAT never fits (it stops early and calibrates on them): presets and the calibration
    of the final P(correct) are chosen on them too, never on test rows."""
    return [i for i in split.train_rows if is_test(split.family.queries[i].query_id, seed + 1, 0.1)]


def stage1_estimates(
    train: Family,
    split: Split,
    embedder: CachedEmbedder,
    settings: Settings,
    vectors: npt.NDArray[np.float32],
    validation_rows: Sequence[int] = (),
) -> tuple[Estimates, Estimates]:
    """Train a scratch capprof on `train`; estimates for every (test query, model) pair, and for the validation
    rows (training queries, each with its own outcome left out of its kNN neighbours), in the split's model
    order."""
    with tempfile.TemporaryDirectory(prefix="capprof-eval-") as tmp:
        scratch = Settings(
            **{
                **settings.model_dump(),
                "data_dir": Path(tmp),
                "database_url": f"sqlite:///{tmp}/eval.db",
                "qdrant_path": ":memory:",
                "qdrant_url": None,
            }
        )
        upgrade_database(scratch.resolved_database_url)
        runtime = Runtime(scratch, embedder=embedder)
        with runtime.transaction() as session:
            import_families(session, runtime.store, embedder, scratch, [train], progress=False)
        runtime.reload_router()
        router = runtime.router

        def chars(rows: Sequence[int]) -> npt.NDArray[np.float64]:
            return np.array([len(split.family.queries[i].text) for i in rows], np.float64)

        est = router.estimate(vectors[split.test_rows], chars(split.test_rows))
        with runtime.sessions() as session:
            db_id = dict(session.execute(select(EvalQuery.external_id, EvalQuery.id)).all())
        row_of = {int(q): r for r, q in enumerate(router.state.query_ids)}
        rows = list(validation_rows)
        own = np.array([row_of.get(db_id.get(split.family.queries[i].query_id, -1), -1) for i in rows], np.int64)
        val = router.estimate(vectors[rows], chars(rows), own_rows=own)
        order = [router.state.models.names.index(m) for m in split.models]
        runtime.store.close()
        runtime.db_engine.dispose()

    def reorder(e: Estimates) -> Estimates:
        assert e.p_heads is None  # the scratch deployment has no checkpoint: the caller blends the heads in
        return replace(
            e,
            p_profile=e.p_profile[:, order],
            p_knn=e.p_knn[:, order],
            knn_share=e.knn_share[:, order],
            p_correct=e.p_correct[:, order],
            costs=e.costs[:, order],
        )

    return reorder(est), reorder(val)


def split_aptitude(
    split: Split, vectors: npt.NDArray[np.float32], new: Sequence[str]
) -> tuple[list[int], AptitudeTest, set[int]]:
    """The columns of the models already known, the aptitude test built from their training outcomes, and the rows
    of its items (the only training rows a new model keeps; none when no model is new)."""
    old = [i for i, m in enumerate(split.models) if m not in set(new)]
    train = split.train_rows
    queries = split.family.queries
    aptitude = build_aptitude_test(
        [queries[i].text for i in train],
        [queries[i].subject or queries[i].domain for i in train],
        vectors[train],
        split.outcomes[np.ix_(train, old)],
    )
    return old, aptitude, ({train[r] for r in aptitude.item_rows} if new else set())


def visible_training_outcomes(split: Split, new_models: Sequence[str], aptitude_rows: set[int]) -> Matrix:
    """(training rows x models) outcomes the deployment knows: a new model's only on the aptitude items."""
    outcomes = split.outcomes[split.train_rows]
    if not new_models:
        return outcomes
    visible = np.zeros_like(outcomes, dtype=bool)
    items = [r for r, i in enumerate(split.train_rows) if i in aptitude_rows]
    for c, m in enumerate(split.models):
        visible[items if m in set(new_models) else slice(None), c] = True
    return np.where(visible, outcomes, np.nan)


def split_heads(
    split: Split,
    vectors: npt.NDArray[np.float32],
    visible: Matrix,
    validation_rows: Sequence[int],
    settings: Settings,
    fit: HeadFitter = fit_heads,
) -> ModelHeads:
    """The per-model heads as a checkpoint trains them: on the visible training outcomes outside the validation
    rows (a new model's on its aptitude items only), in the split's model order."""
    held = set(validation_rows)
    kept = [r for r, i in enumerate(split.train_rows) if i not in held]
    rows = [split.train_rows[r] for r in kept]
    return train_heads(vectors[rows], visible[kept], split.models, placed=settings.difficulty_adjustment, fit=fit)


def with_heads(
    est: Estimates, heads: ModelHeads, vectors: npt.NDArray[np.float32], rows: Sequence[int], settings: Settings
) -> Estimates:
    """`est` (stage 1 for `rows`) with the heads blended in as the service blends them, each by its records."""
    shares = heads.shares(settings.heads_weight, settings.heads_pseudo_count)
    p_heads = heads.predict(vectors[list(rows)])
    return replace(est, p_correct=blend_heads(est.p_correct, p_heads, shares), p_heads=p_heads, head_share=shares)


def item_outcomes(split: Split, aptitude: AptitudeTest) -> Matrix:
    """(models x tasks x items) outcomes of every model on the aptitude items (NaN = not answered)."""
    train = split.train_rows
    width = max(len(t.item_rows) for t in aptitude.tasks)
    items = np.full((len(split.models), len(aptitude.tasks), width), np.nan)
    for t, task in enumerate(aptitude.tasks):
        rows = [train[r] for r in task.item_rows]
        items[:, t, : len(rows)] = split.outcomes[rows].T
    return items


def train_sat(
    split: Split,
    aptitude: AptitudeTest,
    vectors: npt.NDArray[np.float32],
    embedder: CachedEmbedder,
    trained_models: list[int],
    seed: int,
    settings: Settings,
) -> tuple[Matrix, Matrix, Matrix, dict[str, float]]:
    """Train Model-SAT on the training rows of `trained_models`: P(correct) for every (test query, model) and
    (validation query, model), and the scorer's trust per model (lower for models unlike the ones it was trained
    on; with the evidence option, none for models it was not trained on), as the service computes it."""
    train = split.train_rows
    items = item_outcomes(split, aptitude)
    validation_rows = set(sat_validation_rows(split, seed))
    validation = np.array([r for r, i in enumerate(train) if i in validation_rows], np.int64)
    sat, metrics = train_model_sat(
        vectors[train],
        split.outcomes[np.ix_(train, trained_models)],
        items[trained_models],
        embedder.embed([t.description for t in aptitude.tasks]),
        ModelSatConfig(seed=seed),
        device=settings.device,
        validation_rows=validation,
    )
    model_vectors = aptitude_vectors(items)
    embedded = sat.embed_models(model_vectors)
    p_test = sat.predict(vectors[split.test_rows], embedded)
    p_validation = sat.predict(vectors[sorted(validation_rows)], embedded)
    trust = sat.trust(model_vectors, settings.reranker_novelty_scale)
    if settings.reranker_evidence_pseudo_count is not None:
        item_rows = {train[r] for r in aptitude.item_rows}
        beyond_items = [i for i in train if i not in item_rows]
        records = np.zeros(len(split.models))
        records[trained_models] = (~np.isnan(split.outcomes[np.ix_(beyond_items, trained_models)])).sum(axis=0)
        trust = trust * evidence_trust(records, settings.reranker_evidence_pseudo_count)
    return p_test, p_validation, trust, metrics


def capprof_chooser(
    stage1: Matrix,
    stage2: Matrix,
    estimated_costs: Matrix,
    top_k: int,
    weight: Matrix,
    params: tuple[float, float] | None,
) -> Callable[[float], npt.NDArray[np.int64]]:
    """capprof's choice at each lambda, as the service makes it: the re-ranked P(correct), calibrated."""

    def choose(cost_weight: float) -> npt.NDArray[np.int64]:
        final = reranked_p_correct(stage1, stage2, estimated_costs, cost_weight, top_k, weight)
        return choose_models(calibrate(final, params), estimated_costs, cost_weight)

    return choose


def evaluate(
    data: Path,
    benchmark: str,
    out: Path,
    settings: Settings,
    embedder: CachedEmbedder,
    seed: int = 0,
    test_ids: set[str] | None = None,
    new_models: list[str] | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    family, split = load_split(data, benchmark, seed, test_ids)
    new = list(dict.fromkeys(new_models or []))
    unknown = set(new) - set(split.models)
    if unknown:
        raise EvaluationError(f"--new-models: not in {benchmark}/models.csv: {sorted(unknown)}")
    log(
        f"{benchmark}: {len(split.train_rows)} train, {len(split.test_rows)} test queries "
        f"({split.dropped_test} test queries dropped for a missing outcome or cost)"
    )

    texts = [q.text for q in family.queries]
    missing = embedder.count_missing(texts)
    with tqdm(total=missing, desc=f"embedding {benchmark}", unit="q", disable=not progress or not missing) as bar:
        vectors = embedder.embed(texts, progress=bar.update)
    embedder.save()
    test_vectors = vectors[split.test_rows]
    outcomes, costs = split.outcomes[split.test_rows], split.costs[split.test_rows]

    old, aptitude, aptitude_rows = split_aptitude(split, vectors, new)
    train = split.train_rows
    log(f"aptitude test: {len(aptitude.tasks)} tasks, {len(aptitude.item_rows)} items")

    log("training capprof (stage 1) on the training rows ...")
    validation_rows = sat_validation_rows(split, seed)
    est, est_val = stage1_estimates(
        training_family(split, set(new), aptitude_rows), split, embedder, settings, vectors, validation_rows
    )
    train_outcomes = visible_training_outcomes(split, new, aptitude_rows)
    heads = split_heads(split, vectors, train_outcomes, validation_rows, settings)
    est = with_heads(est, heads, vectors, split.test_rows, settings)
    est_val = with_heads(est_val, heads, vectors, validation_rows, settings)
    log("training the Model-SAT scorer ...")
    p_sat, p_sat_val, trust, sat_metrics = train_sat(split, aptitude, vectors, embedder, old, seed, settings)
    k, weight = settings.reranker_top_k, settings.reranker_weight * trust
    validation = ValidationSet.of(split, validation_rows, est_val, p_sat_val)
    # the service routes with P(correct) calibrated on its validation queries: so does the harness
    p_params = validation.fit_calibration(k, weight)
    knn_p, knn_cost = plain_knn(test_vectors, vectors[train], split.outcomes[train], split.costs[train], PLAIN_KNN_K)
    choosers: dict[str, Callable[[float], npt.NDArray[np.int64]]] = {
        f"plain_knn_k{PLAIN_KNN_K}": lambda lam: choose_models(np.nan_to_num(knn_p), knn_cost, lam),
        "knn": lambda lam: choose_models(est.p_knn, est.costs, lam),
        "profile": lambda lam: choose_models(est.p_profile, est.costs, lam),
        "sat": lambda lam: choose_models(p_sat, est.costs, lam),
        "capprof": capprof_chooser(est.p_correct, p_sat, est.costs, k, weight, p_params),
    }

    # chosen on what the deployment knows: a new model's training accuracy is what its aptitude items show
    single_col, single = best_single(common_accuracy(train_outcomes), outcomes, costs)

    fixed: dict[str, Point] = {
        "random": random_router(outcomes, costs),
        "best_single": single,
        "oracle": oracle(outcomes, costs),
    }
    curves: dict[str, list[CurvePoint]] = {
        name: curve_of(chooser, outcomes, costs, DEFAULT_LAMBDAS) for name, chooser in choosers.items()
    }
    routers: dict[str, dict[str, Any]] = {
        name: {"accuracy": p.accuracy, "cost_per_query": p.cost_per_query, "model": None} for name, p in fixed.items()
    }
    routers["best_single"]["model"] = split.models[single_col]
    for name, points in curves.items():
        routers[name] = {"accuracy": points[0].accuracy, "cost_per_query": points[0].cost_per_query, "model": None}

    cost_quality: dict[str, list[dict[str, float]]] = {
        name: [{"lambda": 0.0, "accuracy": p.accuracy, "cost_per_query": p.cost_per_query}] for name, p in fixed.items()
    }
    for name, points in curves.items():
        cost_quality[name] = [
            {"lambda": p.cost_weight, "accuracy": p.accuracy, "cost_per_query": p.cost_per_query} for p in points
        ]
    target = single.accuracy
    cost_at = {name: cost_at_accuracy([fixed[name]], target) for name in fixed}
    cost_at.update({name: cost_at_accuracy(points, target) for name, points in curves.items()})

    report_literature = literature_figures(choosers, curves, outcomes, costs, single_col, fixed["best_single"])

    onboarding = None
    if new:
        log("training capprof again with the new models' full training outcomes ...")
        full, _ = stage1_estimates(training_family(split, set(), set()), split, embedder, settings, vectors)
        everything = visible_training_outcomes(split, [], set())
        full_heads = split_heads(split, vectors, everything, validation_rows, settings)
        full = with_heads(full, full_heads, vectors, split.test_rows, settings)
        everyone = list(range(len(split.models)))
        full_sat, _, full_trust, _ = train_sat(split, aptitude, vectors, embedder, everyone, seed, settings)
        full_weight = settings.reranker_weight * full_trust
        full_point = realised(
            outcomes, costs, choose_reranked(full.p_correct, full_sat, full.costs, 0.0, k, full_weight)
        )
        choice = choosers["capprof"](0.0)
        new_cols = [split.models.index(m) for m in new]
        onboarding = {
            "new_models": new,
            "full_information": asdict(full_point),
            "aptitude_only": {
                "accuracy": routers["capprof"]["accuracy"],
                "cost_per_query": routers["capprof"]["cost_per_query"],
            },
            "share_routed_to_new_models": float(np.isin(choice, new_cols).mean()),
        }

    report: dict[str, Any] = {
        "benchmark": benchmark,
        "n_train": len(split.train_rows),
        "n_test": len(split.test_rows),
        "n_test_dropped": split.dropped_test,
        "seed": seed,
        "models": split.models,
        "routers": routers,
        "cost_quality": cost_quality,
        "cost_at_best_single_accuracy": cost_at,
        "onboarding": onboarding,
        "literature": report_literature,
    }
    report["aptitude_test"] = {"tasks": len(aptitude.tasks), "items": len(aptitude.item_rows)}
    report["sat_calibration"] = {
        "ece_raw": sat_metrics["ece_raw"],
        "ece_calibrated": sat_metrics["ece_calibrated"],
        "test_ece": expected_calibration_error(p_sat[~np.isnan(outcomes)], outcomes[~np.isnan(outcomes)]),
        "train_seconds": sat_metrics["train_seconds"],
    }
    report["presets"] = validation.presets(choosers["capprof"], p_params, outcomes, costs, k, weight)
    report["final_calibration"] = validation.calibration_report(p_params, est, p_sat, outcomes, k, weight)
    report["reranker"] = {
        "top_k": k,
        "weight": settings.reranker_weight,
        "trust": {m: round(float(t), 4) for m, t in zip(split.models, trust, strict=True)},
    }
    embedder.save()  # task descriptions and capability exemplars were embedded after the queries
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown_report(report))
    plot_cost_quality(report, out / "cost_quality.png")
    plot_reliability(report, out / "reliability.png")
    return report


@dataclass(frozen=True)
class ValidationSet:
    """What a deployment knows of its validation queries (complete rows only): it picks its presets and the
    calibration of its final P(correct) there, never on test rows."""

    outcomes: Matrix
    costs: Matrix
    stage1: Matrix
    stage2: Matrix
    estimated_costs: Matrix

    @classmethod
    def of(cls, split: Split, rows: list[int], est_val: Estimates, p_sat_val: Matrix) -> ValidationSet:
        outcomes, costs = split.outcomes[rows], split.costs[rows]
        complete = ~np.isnan(outcomes).any(axis=1) & ~np.isnan(costs).any(axis=1)
        return cls(
            outcomes[complete], costs[complete], est_val.p_correct[complete], p_sat_val[complete],
            est_val.costs[complete],
        )  # fmt: skip

    def final_p(self, cost_weight: float, top_k: int, weight: Matrix) -> Matrix:
        return reranked_p_correct(self.stage1, self.stage2, self.estimated_costs, cost_weight, top_k, weight)

    def fit_calibration(self, top_k: int, weight: Matrix) -> tuple[float, float] | None:
        if len(self.outcomes) < 2:
            return None
        return fit_probability_calibration(self.final_p(0.0, top_k, weight), self.outcomes)

    def presets(
        self,
        test_chooser: Callable[[float], npt.NDArray[np.int64]],
        params: tuple[float, float] | None,
        outcomes: Matrix,
        costs: Matrix,
        top_k: int,
        weight: Matrix,
    ) -> dict[str, dict[str, float]]:
        """The presets picked on the validation curve, and what each gives on the test queries."""
        if len(self.outcomes) < 2:
            return {}
        curve = curve_of(
            capprof_chooser(self.stage1, self.stage2, self.estimated_costs, top_k, weight, params),
            self.outcomes,
            self.costs,
        )
        picked = {}
        for name, point in choose_operating_points(curve).items():
            on_test = realised(outcomes, costs, test_chooser(point.cost_weight))
            picked[name] = {
                "lambda": point.cost_weight,
                "validation_accuracy": point.accuracy,
                "validation_cost_per_query": point.cost_per_query,
                "test_accuracy": on_test.accuracy,
                "test_cost_per_query": on_test.cost_per_query,
            }
        return picked

    def calibration_report(
        self,
        params: tuple[float, float] | None,
        est: Estimates,
        p_sat: Matrix,
        outcomes: Matrix,
        top_k: int,
        weight: Matrix,
    ) -> dict[str, Any]:
        """Calibration error of the final P(correct) at lambda 0 on the test pairs, before and after scaling."""
        if params is None:
            return {}
        p_test = reranked_p_correct(est.p_correct, p_sat, est.costs, 0.0, top_k, weight)
        calibrated = calibrate(p_test, params)
        known = ~np.isnan(outcomes)
        return {
            "validation_queries": len(self.outcomes),
            "scale": params[0],
            "bias": params[1],
            "test_ece_raw": expected_calibration_error(p_test[known], outcomes[known]),
            "test_ece_calibrated": expected_calibration_error(calibrated[known], outcomes[known]),
            "reliability_raw": reliability(p_test, outcomes),
            "reliability_calibrated": reliability(calibrated, outcomes),
        }


def plot_reliability(report: dict[str, Any], path: Path) -> None:
    """Predicted P(correct) against observed accuracy on the test pairs, before and after calibration."""
    calibration = report.get("final_calibration")
    if not calibration:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    for key, label in (("reliability_raw", "final P(correct)"), ("reliability_calibrated", "after Platt scaling")):
        bins = calibration[key]
        ece = calibration["test_ece_raw" if key.endswith("raw") else "test_ece_calibrated"]
        ax.plot(
            [b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o", label=f"{label} (ECE {ece:.3f})"
        )
    ax.set_xlabel("predicted P(correct)")
    ax.set_ylabel("observed accuracy")
    ax.set_title(f"{report['benchmark']}: reliability on test (query, model) pairs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def literature_figures(
    choosers: dict[str, Callable[[float], npt.NDArray[np.int64]]],
    curves: dict[str, list[CurvePoint]],
    outcomes: Matrix,
    costs: Matrix,
    strong: int,
    strong_point: Point,
) -> dict[str, dict[str, float | None]]:
    """RouterBench's AIQ over the single models' cost range, and RouteLLM's APGR and CPT(50%/80%) with the best
    single model as the strong model and the cheapest single model as the weak one, per curve router."""
    model_costs = costs.mean(axis=0)
    weak = int(np.argmin(model_costs))
    weak_accuracy = float(outcomes[:, weak].mean())
    figures: dict[str, dict[str, float | None]] = {}
    for name, chooser in choosers.items():
        shares = [float((chooser(p.cost_weight) == strong).mean()) for p in curves[name]]
        recovery = gap_recovery(shares, [p.accuracy for p in curves[name]], weak_accuracy, strong_point.accuracy)
        figures[name] = {
            "aiq": aiq(curves[name], float(model_costs.min()), float(model_costs.max())),
            "apgr": recovery.apgr,
            "cpt50": recovery.cpt50,
            "cpt80": recovery.cpt80,
        }
    return figures


def markdown_report(report: dict[str, Any]) -> str:
    best = report["routers"]["best_single"]
    lines = [
        f"# {report['benchmark']}: routers on held-out queries",
        "",
        f"{report['n_train']} training and {report['n_test']} test queries "
        f"({report['n_test_dropped']} dropped for a missing outcome), {len(report['models'])} models, seed {report['seed']}.",
        "",
        "| router | accuracy (lambda 0) | cost per query (USD) | cost at best-single accuracy |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in report["routers"].items():
        label = f"{name} ({row['model']})" if row.get("model") else name
        at = report["cost_at_best_single_accuracy"].get(name)
        share = f"{at:.6f} ({at / best['cost_per_query']:.0%} of best single)" if at is not None else "not reached"
        lines.append(f"| {label} | {row['accuracy']:.4f} | {row['cost_per_query']:.6f} | {share} |")
    literature = report.get("literature")
    if literature:
        lines += [
            "",
            "Summary figures of the routing literature (AIQ: RouterBench, over the single models' cost range; APGR and "
            "the share of calls to the best single model needed for 50% / 80% of its quality gap over the cheapest "
            "model: RouteLLM):",
            "",
            "| router | AIQ | APGR | CPT(50%) | CPT(80%) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, row in literature.items():
            cpt = [f"{row[c]:.1%}" if row[c] is not None else "not reached" for c in ("cpt50", "cpt80")]
            lines.append(f"| {name} | {row['aiq']:.4f} | {row['apgr']:.3f} | {cpt[0]} | {cpt[1]} |")
    presets = report.get("presets")
    if presets:
        lines += [
            "",
            "Presets picked on the validation queries (never the test ones), measured on the test queries:",
            "",
            "| preset | lambda | validation accuracy | test accuracy | test cost per query (USD) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, row in presets.items():
            lines.append(
                f"| {name} | {row['lambda']:g} | {row['validation_accuracy']:.4f} | {row['test_accuracy']:.4f} | "
                f"{row['test_cost_per_query']:.6f} |"
            )
    calibration = report.get("final_calibration")
    if calibration:
        lines += [
            "",
            f"Final P(correct) at lambda 0: expected calibration error on the test pairs {calibration['test_ece_raw']:.4f}, "
            f"{calibration['test_ece_calibrated']:.4f} after Platt scaling fitted on {calibration['validation_queries']} "
            "validation queries (reliability.png).",
        ]
    onboarding = report.get("onboarding")
    if onboarding:
        lines += [
            "",
            f"New models held out (aptitude test only): {', '.join(onboarding['new_models'])}",
            "",
            "| capprof trained with | accuracy | cost per query (USD) |",
            "| --- | ---: | ---: |",
            f"| full information | {onboarding['full_information']['accuracy']:.4f} | {onboarding['full_information']['cost_per_query']:.6f} |",
            f"| aptitude results only | {onboarding['aptitude_only']['accuracy']:.4f} | {onboarding['aptitude_only']['cost_per_query']:.6f} |",
            "",
            f"Share of test queries routed to the new models: {onboarding['share_routed_to_new_models']:.1%}",
        ]
    return "\n".join(lines) + "\n"


def plot_cost_quality(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, points in report["cost_quality"].items():
        xs = [p["cost_per_query"] for p in points]
        ys = [p["accuracy"] for p in points]
        if len(points) > 1:
            ax.plot(xs, ys, marker=".", label=name)
        else:
            marker = {"best_single": "*", "oracle": "P", "random": "x"}.get(name, "o")
            ax.scatter(xs, ys, marker=marker, s=140, zorder=5, label=name)
    for name, preset in report.get("presets", {}).items():
        ax.scatter(preset["test_cost_per_query"], preset["test_accuracy"], marker="D", s=70, color="black", zorder=6)
        ax.annotate(
            name, (preset["test_cost_per_query"], preset["test_accuracy"]), textcoords="offset points", xytext=(6, -12)
        )
    ax.set_xscale("log")
    ax.set_xlabel("cost per query (USD, log scale)")
    ax.set_ylabel("accuracy on held-out queries")
    ax.set_title(f"{report['benchmark']}: accuracy vs cost")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
