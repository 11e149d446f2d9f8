"""The demo deployment in process, as `make run` builds it: the README examples and the console tests serve it."""

from __future__ import annotations

from pathlib import Path

from profiling.embedding_cache import CachedEmbedder
from profiling.model_sat import ModelSatConfig
from service.jobs.calibrate import calibrate_presets
from service.registry.aptitude import build_test
from service.registry.checkpoints import activate, train_checkpoint
from service.registry.importer import import_data
from service.runtime import Runtime, upgrade_database
from service.store.vector_store import VectorStore
from tests.conftest import REPO, ThrowawayDatabases, make_settings

DEMO_ADMIN_KEY = "changethis"  # the README's development key


def demo_runtime(databases: ThrowawayDatabases, embedder: CachedEmbedder, tmp: Path, **overrides: object) -> Runtime:
    """Migrate a new database, import data/, build the aptitude test, train and activate a re-ranker, calibrate the
    presets; the runtime is ready for create_app (which closes it at shutdown)."""
    url = databases.new()
    upgrade_database(url)
    settings = make_settings(tmp, database_url=url, admin_key=DEMO_ADMIN_KEY, **overrides)
    store = VectorStore.from_settings(settings, embedder.dimension)
    runtime = Runtime(settings, embedder=embedder, store=store)
    with runtime.transaction() as session:
        import_data(session, store, embedder, settings, REPO / "data", progress=False)
        build_test(session, store)
        # A small scorer keeps the test fast; what the examples touch (versions, activation) is the same.
        checkpoint = train_checkpoint(
            session, store, embedder, settings, ModelSatConfig(epochs=2, hidden=32, model_dim=16)
        )
        activate(session, checkpoint.version)
        runtime.router.reload(session, store)
        calibrate_presets(session, store, runtime.router)  # `make run` calibrates the presets too
    return runtime
