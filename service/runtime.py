"""Builds the long-lived pieces (database, embedder, Qdrant, routing engine) once, for the app or the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from profiling.embedder import SentenceEmbedder
from profiling.embedding_cache import CachedEmbedder
from service.routing.engine import RoutingEngine
from service.settings import Settings
from service.store.db import make_engine, make_session_factory
from service.store.vector_store import VectorStore

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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
        if embedder is not None:
            self.__dict__["embedder"] = embedder
        if session_factory is not None:
            self.__dict__["sessions"] = session_factory
        if store is not None:
            self.__dict__["store"] = store
        self.router = RoutingEngine(settings)

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
        with self.sessions() as session:
            self.router.reload(session, self.store)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
        if "embedder" in self.__dict__:
            self.embedder.save()
