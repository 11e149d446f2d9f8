"""Two real `capprof serve` processes on one database, each with its own embedded Qdrant folder.

Every write made through replica A must reach replica B's routing within the refresh bound: B watches the
routing-state generation in the database, reconciles its local Qdrant from the database and refreshes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from profiling.embedding_cache import CachedEmbedder
from profiling.model_sat import ModelSatConfig
from service.registry.aptitude import build_test
from service.registry.checkpoints import activate, train_checkpoint
from service.registry.importer import import_data
from service.runtime import Runtime, upgrade_database
from service.store.orm import RerankerCheckpoint
from tests.conftest import ADMIN, REPO, ThrowawayDatabases, make_settings, shared_family, small_family

REFRESH_INTERVAL_S = 0.25
# Writes must show on the other replica within this bound: the interval plus one refresh, with room for a
# loaded 2-core machine (the measured p50/p99 are in docs/benchmarks.md).
BOUND_S = 20.0
START_S = 180.0
FAST = ModelSatConfig(epochs=2, hidden=32, model_dim=16)
QUERY = "Natalia sold clips to 48 of her friends in April. How many clips did she sell in total?"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    """A `capprof serve` subprocess with its own data dir (embedding cache copy) and embedded Qdrant folder."""

    def __init__(self, name: str, database_url: str, root: Path, cache: Path | None) -> None:
        self.port = _free_port()
        self.data_dir = root / name
        (self.data_dir / "embeddings").mkdir(parents=True)
        if cache is not None and cache.exists():
            shutil.copy(cache, self.data_dir / "embeddings" / cache.name)
        env = {
            **os.environ,
            "CAPPROF_DATABASE_URL": database_url,
            "CAPPROF_DATA_DIR": str(self.data_dir),
            "CAPPROF_QDRANT_PATH": str(self.data_dir / "qdrant"),  # one embedded folder per process
            "CAPPROF_ADMIN_KEY": ADMIN["X-Admin-Key"],
            "CAPPROF_REFRESH_INTERVAL_S": str(REFRESH_INTERVAL_S),
            "CAPPROF_DEVICE": "cpu",
            # Decisions are not under test; on SQLite their writes from two processes could land between a write
            # transaction's first read and its first write, which SQLite refuses at once (database is locked).
            "CAPPROF_DECISION_FLUSH_INTERVAL_S": "3600",
        }
        self.log = (root / f"{name}.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"replica exited with {self.process.returncode}: {self.tail()}")
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"replica not ready in {START_S}s: {self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def route(self, **body: Any) -> httpx.Response:
        return self.http.post("/v1/route", json={"query": QUERY, "explain": True, **body})

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def eventually(check: Callable[[], bool], what: str, replica: Replica, bound: float = BOUND_S) -> float:
    """Polls until `check` holds (no fixed sleeps); returns the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > bound:
            state = replica.http.get("/readyz").json()
            raise AssertionError(
                f"{what}: not visible on the other replica within {bound}s; its /readyz: {state}; "
                f"its log: {replica.tail()}"
            )
        time.sleep(0.05)
    return time.monotonic() - started


def alternatives(response: httpx.Response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(a["model"], a["p_correct"]) for a in response.json()["alternatives"]]


def same(x: list[tuple[str, float]], y: list[tuple[str, float]]) -> bool:
    """The same ranked models with the same estimates, up to float noise: each replica embeds new texts itself."""
    return [m for m, _ in x] == [m for m, _ in y] and all(
        abs(p - q) < 1e-4 for (_, p), (_, q) in zip(x, y, strict=True)
    )


@pytest.fixture
def replicas(
    databases: ThrowawayDatabases, embedder: CachedEmbedder, tmp_path: Path
) -> Iterator[tuple[Replica, Replica]]:
    """A small real import with an aptitude test and two checkpoints (v1 active) whose files are deleted:
    the weights live only in the database, so the replicas must load them from there."""
    url = databases.new()
    upgrade_database(url)
    seed = Runtime(make_settings(tmp_path / "seed", database_url=url), embedder=embedder)
    family = small_family(tmp_path, shared_family("zeroeval"), 240)
    with seed.transaction() as session:
        import_data(session, seed.store, seed.embedder, seed.settings, family, progress=False)
        build_test(session, seed.store)
        paths = [train_checkpoint(session, seed.store, seed.embedder, seed.settings, FAST).path for _ in range(2)]
        activate(session, 1)
    seed.close()
    embedder.save()
    for path in paths:
        Path(path).unlink()
    cache = embedder._path  # noqa: SLF001 - copy the warm cache so replicas do not re-embed the seed data
    pair = (Replica("a", url, tmp_path, cache), Replica("b", url, tmp_path, cache))
    try:
        deadline = time.monotonic() + START_S
        for replica in pair:
            replica.wait_ready(deadline)
        yield pair
    finally:
        for replica in pair:
            replica.stop()


def test_writes_through_one_replica_reach_the_others_routing(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    # Started after the checkpoint files were deleted: both load the active weights from the database.
    assert a.http.get("/readyz").json()["reranker_version"] == 1
    assert b.http.get("/readyz").json()["reranker_version"] == 1
    assert same(alternatives(a.route()), alternatives(b.route()))

    # 1. A model registered through A becomes routable on B.
    newcomer = "replica-newcomer"
    assert b.route(candidates=[newcomer]).status_code == 422
    body = {"name": newcomer, "provider": "test", "input_usd_per_mtok": 0.01, "output_usd_per_mtok": 0.01}
    assert a.http.post("/v1/models", json=body, headers=ADMIN).status_code == 201
    assert a.route(candidates=[newcomer]).json()["model"] == newcomer  # the writer's very next request
    eventually(lambda: b.route(candidates=[newcomer]).status_code == 200, "registered model", b)
    assert b.route(candidates=[newcomer]).json()["model"] == newcomer

    # 2. Evaluations (on new query texts, which B's Qdrant has never seen) change B's estimates as they did A's.
    pool = [newcomer, *(m for m, _ in alternatives(a.route())[:2])]
    before = alternatives(a.route(candidates=pool, top_n=3))
    evaluations = [
        {"text": f"{QUERY} Variant {i}: answer with the number only.", "score": 1.0, "benchmark": "replica-test"}
        for i in range(6)
    ]
    written = a.http.post(f"/v1/models/{newcomer}/evaluations", json={"evaluations": evaluations}, headers=ADMIN)
    assert written.status_code == 200, written.text
    after = alternatives(a.route(candidates=pool, top_n=3))
    assert not same(after, before)
    eventually(lambda: same(alternatives(b.route(candidates=pool, top_n=3)), after), "evaluations", b)

    # 3. A dimension added through A (its exemplars embedded only into A's Qdrant) profiles B's queries.
    dimension = {
        "kind": "domain",
        "name": "replica-clip-sales",
        "description": "selling clips to friends",
        "exemplars": [QUERY, "How many clips did Natalia sell altogether in April and May?"],
    }
    assert a.http.post("/v1/dimensions", json=dimension, headers=ADMIN).status_code == 201

    def domains(replica: Replica) -> list[str]:
        return [d["name"] for d in replica.route().json()["profile"]["domains"]]

    assert "replica-clip-sales" in domains(a)
    eventually(lambda: "replica-clip-sales" in domains(b), "dimension", b)

    # 4. Feedback-style outcomes: new records of an imported model on an imported query, as feedback writes
    # them (through add_evaluations). The lead's merge extends this with POST /v1/feedback itself.
    imported = next(m for m, _ in alternatives(a.route(top_n=3)) if m != newcomer)
    before = alternatives(a.route(top_n=3))
    rows = a.http.get("/v1/models").json()
    assert any(m["name"] == imported for m in rows)
    outcome = [{"text": QUERY, "score": 0.0, "benchmark": "replica-feedback"}]
    written = a.http.post(f"/v1/models/{imported}/evaluations", json={"evaluations": outcome}, headers=ADMIN)
    assert written.status_code == 200, written.text
    after = alternatives(a.route(top_n=3))
    assert not same(after, before)
    eventually(lambda: same(alternatives(b.route(top_n=3)), after), "feedback records", b)

    # 5. A checkpoint activated through A re-ranks B's routes.
    assert a.http.post("/v1/reranker/activate", json={"version": 2}, headers=ADMIN).status_code == 200
    assert a.route().json()["reranker_version"] == 2
    eventually(lambda: b.route().json()["reranker_version"] == 2, "checkpoint activation", b)

    # Both replicas serve the same generation once quiet, and B's state equals A's.
    eventually(
        lambda: a.http.get("/readyz").json()["generation"] == b.http.get("/readyz").json()["generation"],
        "generation",
        b,
    )
    assert same(alternatives(a.route(top_n=5)), alternatives(b.route(top_n=5)))


def test_checkpoint_weights_are_stored_in_the_database(
    databases: ThrowawayDatabases, embedder: CachedEmbedder, tmp_path: Path
) -> None:
    url = databases.new()
    upgrade_database(url)
    runtime = Runtime(make_settings(tmp_path, database_url=url), embedder=embedder)
    family = small_family(tmp_path, shared_family("zeroeval"), 240)
    with runtime.transaction() as session:
        import_data(session, runtime.store, runtime.embedder, runtime.settings, family, progress=False)
        build_test(session, runtime.store)
        checkpoint = train_checkpoint(session, runtime.store, runtime.embedder, runtime.settings, FAST)
        stored = Path(checkpoint.path).read_bytes()
    Path(checkpoint.path).unlink()
    with runtime.transaction() as session:
        row = session.get(RerankerCheckpoint, checkpoint.id)
        assert row is not None and row.weights == stored
        activate(session, checkpoint.version)  # the file is gone: the database copy suffices
    runtime.reload_router()
    assert runtime.router.state.stage2 is not None
    assert runtime.router.state.stage2.version == checkpoint.version
    runtime.close()
