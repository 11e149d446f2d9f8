"""Builds the long-lived pieces (database, embedder, Qdrant, routing engine) once, for the app or the CLI."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from threadpoolctl import threadpool_limits

from profiling.embedder import SentenceEmbedder
from profiling.embedding_cache import CachedEmbedder
from service.registry.reindex import reconcile
from service.routing.engine import RoutingEngine
from service.settings import Settings
from service.store.db import make_engine, make_session_factory
from service.store.generation import (
    DIMENSION,
    EVALUATIONS,
    FULL,
    Change,
    changes_since,
    current_generation,
    written_generation,
)
from service.store.vector_store import EVAL_QUERIES, EXEMPLARS, VectorStore

PROJECT_ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger(__name__)


def alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade_database(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade_database(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def schema_is_current(engine: Engine) -> bool:
    """Whether the database's Alembic revision is the code's head (False for an empty or older database)."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    return set(current) == set(ScriptDirectory.from_config(alembic_config("")).get_heads())


class Runtime:
    """Pieces may be injected (tests share one embedder); otherwise they are built from settings on first use."""

    def __init__(
        self,
        settings: Settings,
        embedder: CachedEmbedder | None = None,
        session_factory: sessionmaker[Session] | None = None,
        store: VectorStore | None = None,
    ) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.blas_threads:
            # for the whole process from here on (numpy's BLAS is loaded by now; threadpoolctl limits loaded ones)
            threadpool_limits(limits=settings.blas_threads, user_api="blas")
        if embedder is not None:
            self.__dict__["embedder"] = embedder
        if session_factory is not None:
            self.__dict__["sessions"] = session_factory
        if store is not None:
            self.__dict__["store"] = store
        self.router = RoutingEngine(settings)
        self._refresh_lock = threading.Lock()
        self.refreshes = 0  # routing-state refreshes applied (coalesced writes show as fewer refreshes)
        self.refresh_seconds = 0.0

    @cached_property
    def db_engine(self) -> Engine:
        return make_engine(self.settings.resolved_database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.db_engine)

    @cached_property
    def embedder(self) -> CachedEmbedder:
        inner = SentenceEmbedder(self.settings.device, self.settings.embed_batch_size)
        return CachedEmbedder(inner, self.settings.embedding_cache_dir)

    @cached_property
    def store(self) -> VectorStore:
        return VectorStore.from_settings(self.settings, self.embedder.dimension)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error."""
        with self.sessions() as session, session.begin():
            yield session

    def reload_router(self) -> None:
        """Everything from the stores; the local Qdrant first gets the points other replicas wrote."""
        with self._refresh_lock, self.sessions() as session:
            generation = current_generation(session)  # read first: later writes are picked up next time
            reconcile(session, self.store, self.embedder)
            self.router.reload(session, self.store, generation)

    def refresh_router(self, at_least: int | None = None) -> bool:
        """Brings the routing state up to the database's generation, incrementally where the changes allow.

        `at_least`: a generation this process just wrote; nothing to do when a concurrent refresh already
        covered it (many writers share one refresh). Returns whether a new state was swapped in.
        """
        with self._refresh_lock:
            seen = self.router.generation
            if at_least is not None and seen is not None and seen >= at_least:
                return False
            with self.sessions() as session:
                target = current_generation(session)
                if seen is not None and target <= seen:
                    return False
                started = time.perf_counter()
                changes = changes_since(session, seen, target) if seen is not None else None
                self._reconcile(session, changes)
                self.router.refresh(session, self.store, target, changes)
                self.refreshes += 1
                self.refresh_seconds += time.perf_counter() - started
            return True

    def refresh_after_write(self, session: Session) -> None:
        """After a committed write: this process serves it from its very next request. A failure here must not
        turn the committed write into an error; the watcher retries within the refresh interval."""
        try:
            self.refresh_router(written_generation(session))
        except Exception as exc:  # noqa: BLE001 - the write is committed whatever happens here
            logger.warning("routing-state refresh after a write failed (the watcher retries): %s", type(exc).__name__)

    def _reconcile(self, session: Session, changes: list[Change] | None) -> None:
        """Local vectors for rows written elsewhere (a no-op lookup when this process wrote them itself)."""
        state = self.router.state if self.router.loaded else None
        if changes is None or state is None or state.exemplar_index is None or state.query_index is None:
            reconcile(session, self.store, self.embedder)
            return
        kinds = {c.kind for c in changes}
        if FULL in kinds:
            reconcile(session, self.store, self.embedder)
            return
        collections = [c for k, c in ((DIMENSION, EXEMPLARS), (EVALUATIONS, EVAL_QUERIES)) if k in kinds]
        if collections:
            reconcile(
                session,
                self.store,
                self.embedder,
                state.exemplar_index.ids.tolist(),
                state.query_index.ids.tolist(),
                collections,
            )

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
        if "embedder" in self.__dict__:
            self.embedder.save()
