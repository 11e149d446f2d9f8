"""Faults under load (issue 10, item 7): a Postgres the test owns is stopped and restarted under routing load, and
a real `capprof serve` is killed with SIGKILL under load. Bounded to seconds; they run in CI with the rest."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from profiling.embedding_cache import CachedEmbedder
from service.app import create_app
from service.registry.importer import import_data
from service.runtime import Runtime, upgrade_database
from service.store.db import make_engine, make_session_factory
from service.store.orm import EvalQuery, Exemplar, LlmModel, RoutingDecision
from service.store.vector_store import EVAL_QUERIES, EXEMPLARS, VectorStore
from tests.conftest import ADMIN, REPO, ThrowawayDatabases, make_settings, memory_store, shared_family, small_family

pytestmark = pytest.mark.faults

PG_BIN = Path(os.environ.get("CAPPROF_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))

# /readyz while Postgres is down: ready, since routing answers from memory and decisions are queued.
READYZ_WHILE_DATABASE_DOWN = 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnPostgres:
    """initdb + pg_ctl into a temporary folder on a free loopback port; as the postgres user when run as root."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "pgdata"
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                runuser = None
            if runuser is None:
                pytest.skip("running as root without runuser or a postgres user: initdb refuses to run as root")
            self.prefix = [runuser, "-u", "postgres", "--"]
            shutil.chown(folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres?connect_timeout=2"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.prefix, str(PG_BIN / tool), *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnPostgres]:
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN} (set CAPPROF_TEST_PG_BIN)")
    folder = Path(f"/tmp/capprof-pg-{uuid.uuid4().hex[:8]}")  # short: the socket path must fit 107 bytes
    folder.mkdir(mode=0o755)
    server = OwnPostgres(folder)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


def test_postgres_stopped_and_restarted_under_routing_load(
    own_postgres: OwnPostgres, embedder: CachedEmbedder, tmp_path: Path
) -> None:
    upgrade_database(own_postgres.url)
    settings = make_settings(tmp_path, database_url=own_postgres.url, decision_flush_interval_s=0.2)
    runtime = Runtime(settings, embedder=embedder, store=memory_store(embedder))
    with runtime.transaction() as session:
        import_data(
            session, runtime.store, embedder, settings, small_family(tmp_path, shared_family("zeroeval"), 30), False
        )

    decided: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()
    with TestClient(create_app(runtime=runtime)) as client:

        def load() -> None:
            i = 0
            while not stop.is_set() and i < 2000:
                i += 1
                response = client.post("/v1/route", json={"query": f"What is {i} times {i + 3}?"})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    decided.append(response.json()["decision_id"])

        workers = [threading.Thread(target=load) for _ in range(2)]
        for worker in workers:
            worker.start()
        time.sleep(1.0)
        own_postgres.stop("fast")
        down_at = len(decided)
        time.sleep(1.5)  # routing goes on from memory meanwhile
        ready = client.get("/readyz")
        write = client.post("/v1/models", json={"name": "during-outage", "input_usd_per_mtok": 1}, headers=ADMIN)
        decided_while_down = len(decided) - down_at
        own_postgres.start()
        time.sleep(1.0)
        stop.set()
        for worker in workers:
            worker.join(30)

        assert decided_while_down > 0, "routing stopped while only the database was down"
        assert ready.status_code == READYZ_WHILE_DATABASE_DOWN
        assert write.status_code == 503 and "database unavailable" in write.json()["detail"]
        assert set(statuses) == {200}, f"route answers other than 200: {sorted(set(statuses))}"
        after = client.post("/v1/models", json={"name": "after-outage", "input_usd_per_mtok": 1}, headers=ADMIN)
        assert after.status_code == 201, after.text
        assert client.get("/readyz").status_code == 200
        log = client.app.state.decision_log  # type: ignore[attr-defined]
        for _ in range(50):
            if log.flush() == 0 and log.pending == 0:
                break
            time.sleep(0.1)
    engine = make_engine(own_postgres.url)
    with Session(engine) as session:
        written = set(session.scalars(select(RoutingDecision.id).where(RoutingDecision.id.in_(decided))))
        assert session.scalar(select(LlmModel.id).where(LlmModel.name == "during-outage")) is None
    engine.dispose()
    assert len(decided) > decided_while_down > 0
    assert {str(d) for d in written} == set(decided), "decisions made during the outage were lost"


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_ready(base: str, process: subprocess.Popen[bytes], log: Path, limit_s: float = 90) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"capprof serve exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"capprof serve not ready within {limit_s} s: {log.read_text()[-2000:]}")


def test_kill_9_of_a_serving_process_under_load_comes_back_consistent(
    databases: ThrowawayDatabases, embedder: CachedEmbedder, tmp_path: Path
) -> None:
    url = databases.new()
    upgrade_database(url)
    state = tmp_path / "state"
    settings = make_settings(state, database_url=url, qdrant_path=str(state / "qdrant"))
    runtime = Runtime(settings, embedder=embedder)
    with runtime.transaction() as session:
        import_data(
            session, runtime.store, embedder, settings, small_family(tmp_path, shared_family("zeroeval"), 20), False
        )
    runtime.store.close()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CAPPROF_DATA_DIR": str(state),
        "CAPPROF_DATABASE_URL": url,
        "CAPPROF_QDRANT_PATH": str(state / "qdrant"),
        "CAPPROF_ADMIN_KEY": ADMIN["X-Admin-Key"],
        "CAPPROF_DEVICE": "cpu",
        "CAPPROF_DECISION_FLUSH_INTERVAL_S": "0.1",
        "CAPPROF_RATE_LIMIT_PER_S": "0",
    }
    log = tmp_path / "serve.log"
    server = _serve(env, port, log)
    created: list[str] = []
    stop = threading.Event()
    try:
        _wait_ready(base, server, log)

        def writer(worker: int) -> None:
            with httpx.Client(base_url=base, timeout=10) as http:
                for i in range(200):
                    if stop.is_set():
                        return
                    name = f"crash-{worker}-{i}"
                    body = {
                        "name": name,
                        "input_usd_per_mtok": 1,
                        "output_usd_per_mtok": 2,
                        "evaluations": [{"text": f"Crash test query {worker}-{i}: what is {i} squared?", "score": 1}],
                    }
                    try:
                        response = http.post("/v1/models", json=body, headers=ADMIN)
                    except httpx.HTTPError:
                        return  # the server was killed
                    if response.status_code == 201:
                        created.append(name)

        def router() -> None:
            with httpx.Client(base_url=base, timeout=10) as http:
                for i in range(500):
                    if stop.is_set():
                        return
                    try:
                        http.post("/v1/route", json={"query": f"How many legs do {i} spiders have?"})
                    except httpx.HTTPError:
                        return

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)] + [threading.Thread(target=router)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(created) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
        stop.set()
        for thread in threads:
            thread.join(20)
        assert created, "no write succeeded before the kill"

        server = _serve(env, port, log)
        _wait_ready(base, server, log)
        with httpx.Client(base_url=base, timeout=10) as http:
            missing = [n for n in created if http.get(f"/v1/models/{n}").status_code != 200]
            assert not missing, f"acknowledged writes lost by kill -9: {missing}"
            assert http.post("/v1/route", json={"query": "What is 7 squared?"}).status_code == 200
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)

    # Both stores agree: every row has its point and no point lacks its row.
    store = VectorStore.from_settings(settings, embedder.dimension)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            for collection, column in ((EVAL_QUERIES, EvalQuery.id), (EXEMPLARS, Exemplar.id)):
                rows = set(session.scalars(select(column)))
                index, _ = store.snapshot(collection)
                assert set(int(i) for i in index.ids) == rows, f"{collection}: Qdrant and the database disagree"
    finally:
        store.close()
        engine.dispose()
