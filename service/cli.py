"""The `capprof` command line."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
app.add_typer(db_app, name="db")
app.add_typer(profiles_app, name="profiles")
app.add_typer(aptitude_app, name="aptitude")
app.add_typer(reranker_app, name="reranker")


@contextmanager
def _opened(command: str) -> Iterator[Runtime]:
    """One command's runtime: a refusal (bad data, something missing) exits 2 with the reason; stores are closed."""
    from service.errors import NotFoundError
    from service.routing.engine import NoModelsError
    from service.runtime import Runtime

    runtime = Runtime(Settings())
    try:
        yield runtime
    except (DatasetError, NotFoundError, NoModelsError) as exc:
        typer.echo(f"{command}: {exc}", err=True)
        raise typer.Exit(2) from exc
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

    with _opened("reindex") as runtime, runtime.sessions() as session:
        counts = reindex_all(session, runtime.store, runtime.embedder)
    typer.echo(f"reindexed {counts['exemplars']} exemplars and {counts['eval_queries']} evaluation queries")


@profiles_app.command("rebuild")
def profiles_rebuild() -> None:
    """Re-profile every evaluation query and recompute every model profile."""
    from service.registry.profiles import rebuild_profiles

    with _opened("profiles rebuild") as runtime, runtime.transaction() as session:
        stats = rebuild_profiles(session, runtime.store, runtime.settings)
    typer.echo(f"profiled {stats.queries} queries from {stats.records} records: {stats.profile_cells} profile cells")


@aptitude_app.command("build")
def aptitude_build(
    if_missing: Annotated[bool, typer.Option("--if-missing", help="do nothing when a test exists")] = False,
) -> None:
    """Build a new aptitude test version (50 tasks x 20 items) from the evaluation data."""
    from service.registry.aptitude import build_test
    from service.store.readers import current_test

    with _opened("aptitude build") as runtime, runtime.transaction() as session:
        existing = current_test(session) if if_missing else None
        test = existing or build_test(session, runtime.store)
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
    """Calibration error and top-1 accuracy of a checkpoint on the held-out validation queries."""
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
    """Make VERSION the live re-ranker (a running service picks it up within CAPPROF_RERANKER_POLL_S)."""
    from service.registry.checkpoints import activate

    with _opened("reranker activate") as runtime, runtime.transaction() as session:
        activate(session, version)
    typer.echo(f"v{version} is active")


@app.command()
def route(
    query: Annotated[str, typer.Argument(help="the user query")],
    cost_weight: Annotated[float, typer.Option("--lambda", help="cost/quality knob")] = 0.0,
    top_n: Annotated[int, typer.Option(help="alternatives to show")] = 3,
) -> None:
    """Route one query in-process and print the decision as JSON."""
    import numpy as np

    from service.api.schemas import decision_response
    from service.routing.engine import RouteOptions

    with _opened("route") as runtime:
        runtime.reload_router()
        started = time.perf_counter()
        vectors = runtime.embedder.embed_uncached([query])
        decision = runtime.router.decide(
            vectors, np.array([len(query)], float), [RouteOptions(cost_weight=cost_weight, top_n=top_n, explain=True)]
        )[0]
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
) -> None:
    """Measure every router against random, best single, oracle and kNN on held-out queries."""
    from profiling.embedder import SentenceEmbedder
    from profiling.embedding_cache import CachedEmbedder
    from service.jobs.evaluate import EvaluationError
    from service.jobs.evaluate import evaluate as run_evaluation

    settings = Settings()
    embedder = CachedEmbedder(
        SentenceEmbedder(settings.device, settings.embed_batch_size), settings.embedding_cache_dir
    )

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


@app.command()
def bench(
    data: Annotated[Path, typer.Option(help="data folder to import into a scratch store", exists=True)] = Path("data"),
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures as JSON here")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="fewer repetitions (under 3 minutes)")] = False,
    device: Annotated[str, typer.Option(help="embedding device: auto, cpu, cuda")] = "auto",
) -> None:
    """Measure embedding, routing, HTTP and scoring speed and peak memory."""
    from service.jobs.bench import run_bench

    results = run_bench(data, quick, device, log=lambda line: typer.echo(line, err=True))
    text = json.dumps(results, indent=2)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")
    typer.echo(text)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
) -> None:
    """Run the HTTP API."""
    import uvicorn

    from service.app import create_app

    uvicorn.run(create_app(), host=host, port=port, log_level="info")


if __name__ == "__main__":
    app()
