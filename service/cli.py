"""The `capprof` command line."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from profiling.dataset import DatasetError
from service.settings import Settings

if TYPE_CHECKING:
    from service.runtime import Runtime

app = typer.Typer(
    help="capprof: profile LLMs and route each query to the best model for the money.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
profiles_app = typer.Typer(help="Model profiles.", no_args_is_help=True)
aptitude_app = typer.Typer(help="The Model-SAT aptitude test.", no_args_is_help=True)
reranker_app = typer.Typer(help="Model-SAT re-ranker checkpoints.", no_args_is_help=True)
presets_app = typer.Typer(help="Operating points: the quality, balanced and economy presets.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(profiles_app, name="profiles")
app.add_typer(aptitude_app, name="aptitude")
app.add_typer(reranker_app, name="reranker")
app.add_typer(presets_app, name="presets")


@contextmanager
def _opened(command: str) -> Iterator[Runtime]:
    """One command's runtime: a refusal (bad data, something missing) exits 2 with the reason, a database that is
    down or not migrated exits 3 and says which; stores are closed."""
    from sqlalchemy.exc import DBAPIError

    from service.errors import NotFoundError, StoreBusyError
    from service.routing.engine import NoModelsError
    from service.runtime import Runtime, schema_is_current

    runtime = Runtime(Settings())
    try:
        yield runtime
    except (DatasetError, NotFoundError, NoModelsError, StoreBusyError) as exc:
        typer.echo(f"{command}: {exc}", err=True)
        raise typer.Exit(2) from exc
    except DBAPIError as exc:
        try:
            migrated = schema_is_current(runtime.db_engine)
        except DBAPIError:
            migrated = True  # unreachable: the original error says why
        reason = (
            "the database has no capprof schema at this version: run `capprof db upgrade` (scripts/run.sh does)"
            if not migrated
            else f"database unavailable: {str(exc.orig).strip()}"
        )
        typer.echo(f"{command}: {reason}", err=True)
        raise typer.Exit(3) from exc
    finally:
        runtime.close()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Apply migrations up to REVISION."""
    from service.runtime import upgrade_database

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.resolved_database_url, revision)
    typer.echo(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="target revision, e.g. base or -1")]) -> None:
    """Revert migrations down to REVISION."""
    from service.runtime import downgrade_database

    downgrade_database(Settings().resolved_database_url, revision)
    typer.echo(f"database at {revision}")


@app.command("import")
def import_cmd(
    path: Annotated[Path, typer.Argument(help="a family folder, or a folder of family folders", exists=True)],
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace prices changed through the API since the last import")
    ] = False,
    if_changed: Annotated[
        bool, typer.Option("--if-changed", help="do nothing when exactly these files were imported before")
    ] = False,
) -> None:
    """Import models, queries, outcomes and domain labels from a data folder (all or nothing)."""
    from service.registry.importer import already_imported, import_data

    with _opened("import refused, nothing was written") as runtime:
        if if_changed and not overwrite:
            with runtime.sessions() as session:
                earlier = already_imported(session, path)
                if earlier is not None:
                    typer.echo(
                        f"import skipped: these files were imported on {earlier.created_at:%Y-%m-%d %H:%M} "
                        f"({', '.join(earlier.families)}); --overwrite or changed files import again"
                    )
                    return
        with runtime.transaction() as session:
            report = import_data(session, runtime.store, runtime.embedder, runtime.settings, path, progress, overwrite)
    typer.echo(
        f"imported {', '.join(report.families)}: {report.models} models, {report.queries} queries, "
        f"{report.outcomes} outcomes ({report.missing_scores} blank scores skipped), "
        f"{report.exemplars_added} new exemplars; read {report.seconds_reading:.1f}s, "
        f"embedding {report.seconds_embedding:.1f}s, writing {report.seconds_writing:.1f}s"
    )
    if report.kept_api_values:
        typer.echo(
            f"kept {len(report.kept_api_values)} values changed through the API ({', '.join(report.kept_api_values[:8])}"
            f"{' ...' if len(report.kept_api_values) > 8 else ''}); --overwrite replaces them"
        )


@app.command()
def reindex() -> None:
    """Rebuild both Qdrant collections from Postgres (vectors come from the embedding cache)."""
    from service.registry.reindex import reindex_all

    with _opened("reindex") as runtime, runtime.transaction() as session:
        counts = reindex_all(session, runtime.store, runtime.embedder)
    typer.echo(f"reindexed {counts['exemplars']} exemplars and {counts['eval_queries']} evaluation queries")


@profiles_app.command("rebuild")
def profiles_rebuild(
    if_stale: Annotated[
        bool,
        typer.Option("--if-stale", help="only when the stored query profiles differ from what the profiler gives now"),
    ] = False,
) -> None:
    """Re-profile every evaluation query and recompute every model profile (the seeded dimensions are brought up to
    date first, as the service does at start-up, so the profiles are made with the exemplars it will serve)."""
    from service.registry.catalog import ensure_seed_dimensions
    from service.registry.profiles import profiles_are_stale, rebuild_profiles

    with _opened("profiles rebuild") as runtime, runtime.transaction() as session:
        ensure_seed_dimensions(session, runtime.store, runtime.embedder)
        if if_stale and not profiles_are_stale(session, runtime.store, runtime.settings):
            typer.echo("profiles are current: rebuild skipped")
            return
        stats = rebuild_profiles(session, runtime.store, runtime.settings)
    typer.echo(f"profiled {stats.queries} queries from {stats.records} records: {stats.profile_cells} profile cells")


@aptitude_app.command("build")
def aptitude_build(
    if_missing: Annotated[bool, typer.Option("--if-missing", help="do nothing when a test exists")] = False,
    gradable_only: Annotated[
        bool, typer.Option("--gradable-only", help="only queries with a gold answer (for capprof onboard)")
    ] = False,
) -> None:
    """Build a new aptitude test version (50 tasks x 20 items) from the evaluation data."""
    from service.registry.aptitude import build_test
    from service.store.readers import current_test

    with _opened("aptitude build") as runtime, runtime.transaction() as session:
        existing = current_test(session) if if_missing else None
        test = existing or build_test(session, runtime.store, gradable_only)
        version, tasks = test.version, len(test.tasks)
        items = sum(len(t.items) for t in test.tasks)
    typer.echo(f"aptitude test v{version}: {tasks} tasks, {items} items")


def _aptitude_document() -> dict[str, object]:
    from fastapi.encoders import jsonable_encoder

    from service.api.aptitude import aptitude_document
    from service.errors import NotFoundError
    from service.store.readers import current_test

    with _opened("aptitude") as runtime, runtime.sessions() as session:
        test = current_test(session)
        if test is None:
            raise NotFoundError("no aptitude test built yet (capprof aptitude build)")
        return jsonable_encoder(aptitude_document(session, test))


@aptitude_app.command("show")
def aptitude_show() -> None:
    """Summarise the current aptitude test: one line per task."""
    document = _aptitude_document()
    typer.echo(f"aptitude test v{document['version']}")
    for task in document["tasks"]:  # type: ignore[attr-defined]
        typer.echo(f"  task {task['id']}: {len(task['items'])} items  {task['description']}")


@aptitude_app.command("export")
def aptitude_export(
    out: Annotated[Path | None, typer.Option(help="write here instead of standard output")] = None,
) -> None:
    """The current test as JSON (what GET /v1/aptitude serves), to run a new model on."""
    text = json.dumps(_aptitude_document(), indent=2, ensure_ascii=False)
    if out:
        out.write_text(text + "\n")
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text)


@reranker_app.command("train")
def reranker_train(
    activate_after: Annotated[bool, typer.Option("--activate", help="activate the new checkpoint")] = False,
    epochs: Annotated[int, typer.Option(help="most training epochs (early stopping may end sooner)")] = 20,
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    if_missing: Annotated[bool, typer.Option("--if-missing", help="do nothing when a checkpoint is active")] = False,
) -> None:
    """Train a Model-SAT checkpoint on the current aptitude test and all evaluation records."""
    from profiling.model_sat import ModelSatConfig
    from service.registry.checkpoints import activate, train_checkpoint
    from service.store.readers import active_checkpoint

    with _opened("reranker train") as runtime, runtime.transaction() as session:
        current = active_checkpoint(session) if if_missing else None
        if current is not None:
            typer.echo(f"checkpoint v{current.version} is already active")
            return
        checkpoint = train_checkpoint(
            session,
            runtime.store,
            runtime.embedder,
            runtime.settings,
            ModelSatConfig(epochs=epochs, seed=seed),
            log=lambda line: typer.echo(line, err=True),
        )
        if activate_after:
            activate(session, checkpoint.version)
        version, metrics = checkpoint.version, checkpoint.metrics
    typer.echo(f"checkpoint v{version}{' (active)' if activate_after else ''}: {json.dumps(metrics)}")


@reranker_app.command("evaluate")
def reranker_evaluate(version: Annotated[int, typer.Argument(help="checkpoint version")]) -> None:
    """Calibration error and top-1 accuracy of a checkpoint (its scorer, and its heads) on the held-out validation
    queries."""
    from service.registry.checkpoints import evaluate_checkpoint

    with _opened("reranker evaluate") as runtime, runtime.sessions() as session:
        result = evaluate_checkpoint(session, runtime.store, runtime.settings, version)
    typer.echo(json.dumps(result, indent=2))


@reranker_app.command("list")
def reranker_list() -> None:
    """All checkpoints, the active one marked."""
    from service.store.readers import list_checkpoints

    with _opened("reranker list") as runtime, runtime.sessions() as session:
        for c in list_checkpoints(session):
            mark = "*" if c.active else " "
            ece = c.metrics.get("ece_calibrated", float("nan"))
            typer.echo(
                f"{mark} v{c.version}  {c.created_at:%Y-%m-%d %H:%M}  ECE {ece:.4f}  data {c.data_fingerprint[:12]}"
            )


@reranker_app.command("activate")
def reranker_activate(version: Annotated[int, typer.Argument(help="checkpoint version")]) -> None:
    """Make VERSION the live re-ranker (running services pick it up within CAPPROF_REFRESH_INTERVAL_S)."""
    from service.registry.checkpoints import activate

    with _opened("reranker activate") as runtime, runtime.transaction() as session:
        activate(session, version)
    typer.echo(f"v{version} is active")


@presets_app.command("calibrate")
def presets_calibrate(
    if_missing: Annotated[bool, typer.Option("--if-missing", help="do nothing when presets exist")] = False,
) -> None:
    """Pick the presets on the validation queries with the current models, profiles and active re-ranker."""
    from service.jobs.calibrate import CalibrationError, calibrate_presets
    from service.store.readers import load_operating_points

    with _opened("presets calibrate") as runtime, runtime.transaction() as session:
        if if_missing and load_operating_points(session):
            typer.echo("presets are already calibrated")
            return
        runtime.router.reload(session, runtime.store)
        try:
            chosen = calibrate_presets(session, runtime.store, runtime.router)
        except CalibrationError as exc:
            typer.echo(f"presets calibrate: {exc}", err=True)
            raise typer.Exit(2) from exc
    for name, point in chosen.items():
        typer.echo(
            f"{name:8s} lambda {point.cost_weight:<10g} validation accuracy {point.accuracy:.4f}  "
            f"cost per query ${point.cost_per_query:.6f}"
        )


@presets_app.command("show")
def presets_show() -> None:
    """The stored presets with their validation figures."""
    from sqlalchemy import select

    from service.store.orm import OperatingPoint

    with _opened("presets show") as runtime, runtime.sessions() as session:
        points = list(session.scalars(select(OperatingPoint).order_by(OperatingPoint.validation_cost_per_query)))
    if not points:
        typer.echo("no presets yet: run `capprof presets calibrate`")
    for p in points:
        typer.echo(
            f"{p.name:8s} lambda {p.cost_weight:<10g} validation accuracy {p.validation_accuracy:.4f}  "
            f"cost per query ${p.validation_cost_per_query:.6f}  ({p.validation_queries} queries, "
            f"{p.calibrated_at:%Y-%m-%d %H:%M})"
        )


@app.command()
def probe(
    file: Annotated[Path, typer.Argument(help="JSON lines of {text, capability, domain}", exists=True)] = Path(
        "data/probe/everyday_queries.jsonl"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """How often the query profile's top capability and domain agree with a labelled probe set."""
    from dataclasses import asdict

    from service.jobs.probe import domain_families, probe, read_probe
    from service.store.readers import load_profiler

    items = read_probe(file)
    with _opened("probe") as runtime, runtime.sessions() as session:
        profiler = load_profiler(session, runtime.store, runtime.settings)
        report = probe(profiler, runtime.embedder.embed([i.text for i in items]), items, domain_families(session))
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
        return
    typer.echo(
        f"{report.items} queries: top-1 capability {report.capability_top1:.1%}; "
        f"top-1 domain {report.domain_top1:.1%} of {report.in_domain_items} in-domain "
        f"({report.in_domain_given_none:.1%} of them given no domain); "
        f"'none' for {report.none_recognised:.1%} of {report.out_of_domain_items} out-of-domain"
    )
    for confusion, count in list(report.confusions.items())[:8]:
        typer.echo(f"  {count:3d}  {confusion}")


@app.command()
def route(
    query: Annotated[str, typer.Argument(help="the user query")],
    cost_weight: Annotated[float | None, typer.Option("--lambda", help="cost/quality knob")] = None,
    preset: Annotated[str | None, typer.Option(help="quality, balanced or economy (default: balanced)")] = None,
    top_n: Annotated[int, typer.Option(help="alternatives to show")] = 3,
) -> None:
    """Route one query in-process and print the decision as JSON."""
    import numpy as np

    from service.api.schemas import decision_response
    from service.routing.engine import PresetError, RouteOptions, resolve_cost_weight

    with _opened("route") as runtime:
        runtime.reload_router()
        try:
            lam, used = resolve_cost_weight(cost_weight, preset, runtime.router.state.presets)
        except PresetError as exc:
            typer.echo(f"route: {exc}", err=True)
            raise typer.Exit(2) from exc
        started = time.perf_counter()
        vectors = runtime.embedder.embed_uncached([query])
        options = RouteOptions(cost_weight=lam, preset=used, top_n=top_n, explain=True)
        decision = runtime.router.decide(vectors, np.array([len(query)], float), [options])[0]
        body = decision_response(decision, (time.perf_counter() - started) * 1000).model_dump(mode="json")
    json.dump(body, sys.stdout, indent=2)
    typer.echo()


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option(help="folder holding the benchmark folders", exists=True)],
    benchmark: Annotated[str, typer.Option(help="benchmark folder name inside DATA")],
    out: Annotated[Path, typer.Option(help="where report.json, report.md and cost_quality.png go")],
    test_ids: Annotated[Path | None, typer.Option(help="file of test query ids, one a line", exists=True)] = None,
    new_models: Annotated[
        Path | None, typer.Option(help="file of newly released models, one a line", exists=True)
    ] = None,
    seed: Annotated[int, typer.Option(help="seed for the split and the aptitude test")] = 0,
    onboarding_sweep: Annotated[
        bool,
        typer.Option(
            "--onboarding-sweep",
            help="instead: onboard every model in turn and random groups of 2-4 from aptitude answers alone",
        ),
    ] = False,
    random_groups: Annotated[int, typer.Option(help="with --onboarding-sweep: how many random groups")] = 6,
    splits: Annotated[
        int,
        typer.Option(
            min=1, help="cross-validate: repeat over this many random splits (seeds SEED, SEED+1, ...) and summarise"
        ),
    ] = 1,
    store: Annotated[
        bool,
        typer.Option("--store", help="also keep the report in the database (CAPPROF_DATABASE_URL) for the console"),
    ] = False,
) -> None:
    """Measure every router against random, best single, oracle and kNN on held-out queries."""
    from profiling.embedder import SentenceEmbedder
    from profiling.embedding_cache import CachedEmbedder
    from service.jobs.crossval import cross_validate
    from service.jobs.evaluate import EvaluationError
    from service.jobs.evaluate import evaluate as run_evaluation
    from service.jobs.onboarding import onboarding_sweep as run_sweep

    settings = Settings()
    embedder = CachedEmbedder(
        SentenceEmbedder(settings.device, settings.embed_batch_size), settings.embedding_cache_dir
    )
    if onboarding_sweep:
        try:
            run_sweep(
                data, benchmark, out, settings, embedder, seed, random_groups, log=lambda x: typer.echo(x, err=True)
            )
        except (EvaluationError, DatasetError) as exc:
            typer.echo(f"evaluate: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo((out / "onboarding.md").read_text())
        return
    if splits > 1:
        if test_ids is not None or new_models is not None or store:
            typer.echo(
                "evaluate: --splits draws its own test queries and keeps its reports in files; "
                "it takes no --test-ids, --new-models or --store",
                err=True,
            )
            raise typer.Exit(2)
        try:
            cross_validate(
                data,
                benchmark,
                out,
                settings,
                embedder,
                range(seed, seed + splits),
                log=lambda x: typer.echo(x, err=True),
            )
        except (EvaluationError, DatasetError) as exc:
            typer.echo(f"evaluate: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo((out / "crossval.md").read_text())
        return

    def lines(path: Path | None) -> list[str] | None:
        return None if path is None else [x.strip() for x in path.read_text().splitlines() if x.strip()]

    ids = lines(test_ids)
    try:
        report = run_evaluation(
            data,
            benchmark,
            out,
            settings,
            embedder,
            seed,
            set(ids) if ids is not None else None,
            lines(new_models),
            log=lambda line: typer.echo(line, err=True),
        )
    except (EvaluationError, DatasetError) as exc:
        typer.echo(f"evaluate: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo((out / "report.md").read_text())
    typer.echo(
        f"wrote {out / 'report.json'}, {out / 'report.md'}, {out / 'cost_quality.png'} ({report['n_test']} test queries)"
    )
    if store:
        options = {
            "data": str(data),
            "test_ids": str(test_ids) if test_ids else None,
            "new_models": str(new_models) if new_models else None,
        }
        run_id = store_evaluation_report(settings, report, options)
        typer.echo(f"stored as evaluation run {run_id} (the console's Quality page shows the newest per benchmark)")


def store_evaluation_report(settings: Settings, report: dict[str, Any], options: dict[str, Any]) -> int:
    """Writes the report to the database alone (no vector store is opened, so a running server is not disturbed)."""
    from sqlalchemy.orm import Session

    from service.registry.evaluations import store_evaluation
    from service.store.db import make_engine

    engine = make_engine(settings.resolved_database_url)
    try:
        with Session(engine) as session, session.begin():
            return store_evaluation(session, report, options).id
    finally:
        engine.dispose()


@app.command()
def bench(
    data: Annotated[Path, typer.Option(help="data folder to import into a scratch store", exists=True)] = Path("data"),
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures as JSON here")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="fewer repetitions (under 3 minutes)")] = False,
    device: Annotated[str, typer.Option(help="embedding device: auto, cpu, cuda")] = "auto",
    replicas: Annotated[
        bool, typer.Option("--replicas", help="two replicas: routing under a write load, refresh latency")
    ] = False,
    database_url: Annotated[
        str | None, typer.Option(help="--replicas: an EMPTY database to use (default: scratch SQLite)")
    ] = None,
) -> None:
    """Measure embedding, routing, HTTP and scoring speed and peak memory (or, --replicas, scale-out)."""
    from service.jobs.bench import run_bench
    from service.jobs.replica_bench import run_replica_bench

    if replicas:
        results = run_replica_bench(data, quick, device, database_url, log=lambda line: typer.echo(line, err=True))
    else:
        results = run_bench(data, quick, device, log=lambda line: typer.echo(line, err=True))
    text = json.dumps(results, indent=2)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")
    typer.echo(text)


@app.command()
def onboard(
    model: Annotated[str, typer.Argument(help="a registered model with an upstream (endpoint_url)")],
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="items asked at the same time")] = 8,
    retries: Annotated[int, typer.Option(min=0, max=20, help="retries per item on upstream failures")] = 3,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="max_tokens sent with each item")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="forget answers kept from an earlier run")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Run the current aptitude test through MODEL's upstream, grade each answer, record its aptitude (resumable)."""
    from service.jobs.onboard import onboard as run_onboard

    with _opened("onboard") as runtime:
        report = run_onboard(
            runtime, model, concurrency, retries, max_tokens=max_tokens, restart=restart, progress=progress
        )
    known = [a for a in report.aptitude if a is not None]
    typer.echo(
        f"{report.model}: aptitude test v{report.version}, {report.gradable} of {report.items} items gradable, "
        f"{report.resumed} kept from an earlier run, {report.asked} asked, {report.failed} failed; "
        f"{report.recorded} recorded"
        + (f", accuracy {report.accuracy:.3f} over {len(known)} tasks" if report.accuracy is not None else "")
    )
    if report.failed:
        typer.echo(f"rerun `capprof onboard {model}` to retry the {report.failed} failed items", err=True)
        raise typer.Exit(1)
    typer.echo(
        "routable now from its aptitude answers; with an active checkpoint, routing also fits it a head on them",
        err=True,
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="proxies whose X-Forwarded-Proto/For are believed (comma-separated, or '*'); default 127.0.0.1"
        ),
    ] = None,
) -> None:
    """Run the HTTP API."""
    import uvicorn

    from service.app import create_app
    from service.errors import StoreBusyError
    from service.request_log import configure_request_logging

    configure_request_logging()  # one JSON line per request replaces uvicorn's access log
    app = create_app()
    try:
        _ = app.state.runtime.store  # open it now: a folder held by another process is one line, not a traceback
    except StoreBusyError as exc:
        typer.echo(f"serve: {exc}", err=True)
        raise typer.Exit(2) from exc
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, forwarded_allow_ips=forwarded_allow_ips)


# Issue 11: API keys, admin reports, reporting grants, retention purge.
keys_app = typer.Typer(help="API keys (scopes route < read < admin).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _refused(command: str, exc: Exception) -> typer.Exit:
    typer.echo(f"{command}: {exc}", err=True)
    return typer.Exit(2)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="who the key is for; decisions log it as the caller")],
    scope: Annotated[str, typer.Option(help="route, read or admin")] = "route",
    cost_weight: Annotated[
        float | None, typer.Option("--lambda", help="default lambda when a request names none")
    ] = None,
    monthly_budget_usd: Annotated[
        float | None, typer.Option("--monthly-budget-usd", help="route refuses (429) once the month's spend reaches it")
    ] = None,
) -> None:
    """Create a key and print it once (only its HMAC is stored)."""
    from service.errors import ConflictError
    from service.registry.keys import create_key

    with _opened("keys create") as runtime, runtime.transaction() as session:
        try:
            created = create_key(
                session, runtime.settings.resolved_key_secret, name, scope, cost_weight, monthly_budget_usd
            )
        except (ValueError, ConflictError) as exc:
            raise _refused("keys create", exc) from exc
    typer.echo(created.key)
    typer.echo(f"key {name!r} (scope {scope}) created; this is the only time it is shown", err=True)


@keys_app.command("list")
def keys_list() -> None:
    """Every key with its scope, limits and state (never the key)."""
    from service.registry.keys import list_keys

    with _opened("keys list") as runtime, runtime.sessions() as session:
        rows = [
            {
                "name": k.name,
                "scope": k.scopes,
                "lambda": k.default_lambda,
                "monthly_budget_usd": k.monthly_budget_usd,
                "created_at": k.created_at,
                "revoked_at": k.revoked_at,
            }
            for k in list_keys(session)
        ]
    typer.echo(_table(list(rows[0]) if rows else ["name"], rows))


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="the key's name")]) -> None:
    """Revoke a key; a running service refuses it on its next request."""
    from service.registry.keys import revoke_key

    with _opened("keys revoke") as runtime, runtime.transaction() as session:
        revoke_key(session, name)
    typer.echo(f"key {name!r} revoked")


def _table(columns: list[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """A readable terminal table: right-aligned numbers, floats to 6 significant digits."""

    def cell(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.6g}"
        return str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), int | float) or row.get(c) is None for row in rows) for c in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True))

    out = [line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    return "\n".join(x.rstrip() for x in out) + f"\n({len(rows)} rows)"


@app.command()
def report(
    name: Annotated[str, typer.Argument(help="routing_volume, cost_savings, traffic_mix, model_quality, ...")],
    start: Annotated[str | None, typer.Option("--from", help="ISO date or time (UTC)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO date or time (UTC), exclusive")] = None,
    caller: Annotated[str | None, typer.Option(help="only this caller (key name)")] = None,
    model: Annotated[str | None, typer.Option(help="only this model")] = None,
    output: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
) -> None:
    """Print an admin report (one of the SQL views of README "Reporting")."""
    from datetime import datetime

    from service.api.reports import to_csv
    from service.store.reports import ReportError, ReportFilters, run_report

    if output not in ("table", "csv", "json"):
        raise _refused("report", ValueError("--format: table, csv or json"))
    try:
        filters = ReportFilters(
            datetime.fromisoformat(start) if start else None,
            datetime.fromisoformat(end) if end else None,
            caller,
            model,
        )
    except ValueError as exc:
        raise _refused("report", ValueError(f"--from/--to: {exc}")) from exc
    with _opened("report") as runtime, runtime.sessions() as session:
        try:
            columns, rows = run_report(session, name, filters)
        except ReportError as exc:
            raise _refused("report", exc) from exc
    if output == "json":
        typer.echo(json.dumps({"report": name, "columns": columns, "rows": rows}, indent=2))
    elif output == "csv":
        typer.echo(to_csv(columns, rows), nl=False)
    else:
        typer.echo(_table(columns, rows))


@db_app.command("grant-reporting")
def db_grant_reporting(role: Annotated[str, typer.Argument(help="an existing Postgres role")]) -> None:
    """Give a Postgres role SELECT on the report views, and nothing else."""
    from service.errors import NotFoundError
    from service.store.db import make_engine
    from service.store.reports import ReportError, grant_reporting

    engine = make_engine(Settings().resolved_database_url)
    try:
        with engine.begin() as connection:
            views = grant_reporting(connection, role)
    except (ReportError, NotFoundError) as exc:
        raise _refused("db grant-reporting", exc) from exc
    finally:
        engine.dispose()
    typer.echo(f"{role} may SELECT {', '.join(views)}")


@app.command()
def purge() -> None:
    """Remove decisions' query vectors, texts and dimension weights older than CAPPROF_RETENTION_DAYS."""
    from service.registry.retention import purge_expired

    with _opened("purge") as runtime, runtime.transaction() as session:
        result = purge_expired(session, runtime.settings.retention_days)
    typer.echo(f"removed query data of {result.queries} decisions older than {result.cutoff:%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    app()
