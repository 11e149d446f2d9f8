"""A store that is down: a clear 503, nothing half-written, decisions kept until the database is back."""

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from profiling.embedding_cache import CachedEmbedder
from service.app import create_app
from service.routing.decision_log import DecisionLog
from service.runtime import Runtime
from service.store.db import make_engine, make_session_factory
from service.store.orm import RoutingDecision
from service.store.vector_store import VectorStore
from tests.conftest import ADMIN, make_settings

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=1"


def test_registry_answers_503_when_the_database_is_down(
    embedder: CachedEmbedder, store: VectorStore, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, database_url=UNREACHABLE)
    down = make_session_factory(make_engine(UNREACHABLE))
    runtime = Runtime(settings, embedder=embedder, session_factory=down, store=store)
    with TestClient(create_app(runtime=runtime)) as client:
        listed = client.get("/v1/models")
        assert listed.status_code == 503
        assert "database unavailable" in listed.json()["detail"]
        assert listed.headers["Retry-After"]
        created = client.post("/v1/models", json={"name": "m"}, headers=ADMIN)
        assert created.status_code == 503
        ready = client.get("/readyz", headers=ADMIN)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unavailable")
        assert ready.json()["checks"]["qdrant"] == "ok"


def _decision(i: int) -> dict[str, object]:
    return {
        "id": f"00000000-0000-0000-0000-{i:012d}",
        "created_at": datetime.now(UTC),
        "query_hash": "h",
        "chosen_model": "m",
        "cost_weight": 0.0,
        "estimated_cost_usd": 0.001,
        "estimated_p_correct": 0.5,
        "candidates": [{"model": "m"}],
        "profile": {},
        "latency_ms": 1.0,
        "caller": None,
    }


def test_decisions_wait_for_the_database_and_none_is_lost(session_factory: sessionmaker[Session]) -> None:
    down = make_session_factory(make_engine(UNREACHABLE))
    database_up = False

    def sessions() -> Session:
        return session_factory() if database_up else down()

    log = DecisionLog(sessions, flush_interval_s=None)
    for i in range(3):
        log.append(_decision(i))
    assert log.flush() == 0
    assert log.pending == 3
    assert log.last_error is not None

    database_up = True
    assert log.flush() == 3
    assert log.pending == 0 and log.last_error is None
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(RoutingDecision)) == 3


def test_a_row_the_database_refuses_is_dropped_and_the_rest_are_written(
    session_factory: sessionmaker[Session],
) -> None:
    dropped: list[int] = []
    log = DecisionLog(session_factory, flush_interval_s=None, on_drop=dropped.append)
    routed = _decision(1) | {"_dimensions": [], "_vector": None}  # /v1/route's rows carry the private fields
    direct = _decision(2)  # the gateway's rows for a named model carry none: one batch must hold both shapes
    unwritable = _decision(3) | {"prompt_tokens": 10**30}  # overflows the column on every database
    for row in (routed, unwritable, direct):
        log.append(row)
    assert log.flush() == 2
    assert log.pending == 0 and dropped == [1]
    assert log.last_error is not None and "dropped" in log.last_error
    with session_factory() as session:
        ids = set(session.scalars(select(RoutingDecision.id)))
    assert ids == {routed["id"], direct["id"]}


def test_the_writer_thread_outlives_a_failing_flush(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = DecisionLog(session_factory, flush_interval_s=0.01)
    write_rows = log.flush
    failures = [RuntimeError("a bug in one flush")]

    def flush() -> int:
        if failures:
            raise failures.pop()
        return write_rows()

    monkeypatch.setattr(log, "flush", flush)
    log.append(_decision(4))
    log.start()
    try:
        deadline = time.monotonic() + 10
        while log.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not failures and log.pending == 0  # written by the thread itself, after the failure
    finally:
        log.stop()
