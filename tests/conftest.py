"""Real Postgres (a throwaway database per run) or SQLite, embedded Qdrant, the real embedding model.

CAPPROF_TEST_BACKEND=postgres|sqlite picks the database (default postgres);
CAPPROF_TEST_POSTGRES_URL points at a server's admin database (default: local trust auth).
Every test runs inside a transaction that is rolled back, so tests never see each other's rows.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from profiling.embedder import SentenceEmbedder
from profiling.embedding_cache import CachedEmbedder
from service.app import create_app
from service.runtime import Runtime, upgrade_database
from service.settings import Settings
from service.store.db import make_engine
from service.store.vector_store import VectorStore

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CAPPROF_SHARED_DATA", REPO.parent / "shared" / "data"))
BACKEND = os.environ.get("CAPPROF_TEST_BACKEND", "postgres")
POSTGRES_ADMIN_URL = os.environ.get(
    "CAPPROF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
EMBEDDING_CACHE = Path(os.environ.get("CAPPROF_TEST_EMBEDDING_CACHE", REPO / ".capprof" / "test-embeddings"))
ADMIN = {"X-Admin-Key": "test-admin-key"}


def shared_family(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared data folder {path} is not present")
    return path


def csv_rows(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:  # type: ignore[operator]
        return list(csv.DictReader(handle))


class ThrowawayDatabases:
    """Creates databases for this run and drops them at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.created: list[str] = []
        self.admin: Engine | None = None
        if BACKEND == "postgres":
            self.admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")

    def new(self) -> str:
        name = f"capprof_test_{uuid.uuid4().hex[:10]}"
        if self.admin is None:
            return f"sqlite:///{self.tmp / (name + '.db')}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if self.admin is None:
            return
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayDatabases]:
    dbs = ThrowawayDatabases(tmp_path_factory.mktemp("db"))
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def database_url(databases: ThrowawayDatabases) -> str:
    url = databases.new()
    upgrade_database(url)
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def _transactional(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        outer = conn.begin()
        yield conn
        outer.rollback()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    yield from _transactional(engine)


def savepoint_sessions(conn: Connection) -> sessionmaker[Session]:
    """Sessions whose commits only release savepoints inside the test's outer transaction."""
    return sessionmaker(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)


@pytest.fixture
def session_factory(connection: Connection) -> sessionmaker[Session]:
    return savepoint_sessions(connection)


@pytest.fixture
def db(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@pytest.fixture(scope="session")
def embedder() -> Iterator[CachedEmbedder]:
    cached = CachedEmbedder(SentenceEmbedder(device="cpu"), EMBEDDING_CACHE)
    yield cached
    cached.save()


def memory_store(embedder: CachedEmbedder) -> VectorStore:
    return VectorStore(QdrantClient(location=":memory:"), embedder.dimension)


@pytest.fixture
def store(embedder: CachedEmbedder) -> Iterator[VectorStore]:
    vector_store = memory_store(embedder)
    yield vector_store
    vector_store.close()


def make_settings(tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp,
        "qdrant_path": ":memory:",
        "admin_key": ADMIN["X-Admin-Key"],
        "decision_flush_interval_s": None,
        "microbatch_window_ms": 1.0,
        # Background threads must not share the single test connection: the routing-state watcher stays idle
        # unless a test (on a database of its own) asks for it.
        "refresh_interval_s": 3600.0,
        # Rate limiting (issue 10) is tested on its own; elsewhere fast loops from one test client must not hit it.
        "rate_limit_per_s": 0.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def runtime(
    settings: Settings, embedder: CachedEmbedder, session_factory: sessionmaker[Session], store: VectorStore
) -> Runtime:
    return Runtime(settings, embedder=embedder, session_factory=session_factory, store=store)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=runtime)) as test_client:
        yield test_client


@pytest.fixture
def operating(
    tmp_path: Path, embedder: CachedEmbedder, session_factory: sessionmaker[Session], store: VectorStore
) -> Iterator[tuple[TestClient, Runtime]]:
    """A served deployment with models, evaluations and traffic, for the operating and console tests."""
    from tests.operating import operating_client

    with operating_client(tmp_path, embedder, session_factory, store) as (client, runtime):
        yield client, runtime


def small_family(tmp: Path, source: Path, n_queries: int, name: str | None = None) -> Path:
    """A copy of the first n queries of a real family (with their outcomes), to corrupt in tests."""
    target = tmp / (name or source.name)
    target.mkdir(parents=True)
    shutil.copy(source / "models.csv", target / "models.csv")
    queries = csv_rows(source / "queries.csv.gz")[:n_queries]
    keep = {q["query_id"] for q in queries}
    outcomes = [o for o in csv_rows(source / "outcomes.csv.gz") if o["query_id"] in keep]
    for file, rows in (("queries.csv.gz", queries), ("outcomes.csv.gz", outcomes)):
        with gzip.open(target / file, "wt", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return target
