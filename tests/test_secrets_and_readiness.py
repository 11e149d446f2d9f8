"""Issue 10: secrets (strong admin key, no empty key, no exception text), readiness that serves a load balancer,
and a one-line CLI error when the embedded Qdrant folder is held."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from qdrant_client import QdrantClient
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from profiling.embedding_cache import CachedEmbedder
from service.app import create_app
from service.cli import app as cli
from service.runtime import Runtime, upgrade_database
from service.settings import Settings
from service.store.db import make_engine, make_session_factory
from service.store.vector_store import VectorStore
from tests.conftest import ADMIN, REPO, make_settings

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=1"
GPT = {"name": "acme-large", "provider": "acme", "input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0}


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "empty"),
        ("changethis", "default"),
        ("x", "1 characters"),
        ("a-real-secret", "13 characters"),
        ("a" * 64, "does not look random"),
        ("ab" * 32, "does not look random"),
        ("0" * 40 + "abcdefghij", "does not look random"),
    ],
)
def test_production_refuses_a_weak_admin_key(monkeypatch: pytest.MonkeyPatch, key: str, why: str) -> None:
    monkeypatch.setenv("CAPPROF_ENVIRONMENT", "production")
    monkeypatch.setenv("CAPPROF_ADMIN_KEY", key)
    with pytest.raises(ValidationError, match=why):
        Settings()


def _public(body: dict[str, object]) -> dict[str, object]:
    """The unauthenticated /readyz body without the routing-state generation (a counter that moves with writes)."""
    assert "generation" in body
    return {k: v for k, v in body.items() if k != "generation"}


def test_production_accepts_a_random_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPPROF_ENVIRONMENT", "production")
    monkeypatch.setenv("CAPPROF_KEY_SECRET", secrets.token_hex(32))
    for key in (secrets.token_urlsafe(32), secrets.token_hex(32), secrets.token_hex(16)):
        monkeypatch.setenv("CAPPROF_ADMIN_KEY", key)
        assert Settings().admin_key.get_secret_value() == key


def test_the_docker_image_defaults_to_production() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "CAPPROF_ENVIRONMENT=production" in dockerfile
    assert "CAPPROF_ADMIN_KEY=" not in dockerfile, "the image must not bake in a key"


@pytest.fixture
def keyless_client(embedder: CachedEmbedder, session_factory: sessionmaker[Session], tmp_path: Path) -> TestClient:
    """A development service configured with an EMPTY admin key (the finding: then anyone was admin)."""
    settings = make_settings(tmp_path, admin_key="")
    runtime = Runtime(settings, embedder=embedder, session_factory=session_factory, store=_memory(embedder))
    return TestClient(create_app(runtime=runtime))


def _memory(embedder: CachedEmbedder) -> VectorStore:
    return VectorStore(QdrantClient(location=":memory:"), embedder.dimension)


def test_an_empty_key_never_authenticates(keyless_client: TestClient, client: TestClient) -> None:
    with keyless_client:
        for headers in ({"X-Admin-Key": ""}, {"Authorization": "Bearer "}, {"Authorization": "Bearer"}, {}):
            response = keyless_client.post("/v1/models", json=GPT, headers=headers)
            assert response.status_code == 401, headers
            assert keyless_client.delete("/v1/models/acme-large", headers=headers).status_code == 401
    # with a configured key, an empty header is refused too, and the real key still works
    assert client.post("/v1/models", json=GPT, headers={"X-Admin-Key": ""}).status_code == 401
    assert client.post("/v1/models", json=GPT, headers={"X-Admin-Key": "", **_bearer()}).status_code == 201


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN['X-Admin-Key']}"}


def test_a_5xx_carries_a_request_id_and_no_exception_text(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    app: FastAPI = client.app  # type: ignore[assignment]

    @app.get("/_test/boom")
    def boom() -> None:
        raise RuntimeError("secret-ish detail: host=10.0.0.7 port=5432")

    with caplog.at_level(logging.ERROR):
        response = client.get("/_test/boom", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "req-42"
    assert response.json()["request_id"] == "req-42"
    assert "10.0.0.7" not in response.text and "RuntimeError" not in response.text
    assert any("req-42" in r.getMessage() and r.exc_info for r in caplog.records), "the traceback is logged"


def test_every_response_echoes_a_request_id(client: TestClient) -> None:
    made = client.get("/healthz").headers["X-Request-ID"]
    assert len(made) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "abc.123"}).headers["X-Request-ID"] == "abc.123"
    # a header that could forge log lines is replaced, not echoed
    assert client.get("/healthz", headers={"X-Request-ID": "a b;<x>"}).headers["X-Request-ID"] != "a b;<x>"


class SwitchableDatabase:
    """A session factory whose database can be taken down and brought back."""

    def __init__(self, up: sessionmaker[Session]) -> None:
        self.up = up
        self.down = make_session_factory(make_engine(UNREACHABLE))
        self.is_up = True

    def __call__(self) -> Session:
        return self.up() if self.is_up else self.down()


def test_readyz_stays_ready_while_routing_answers_with_the_database_down(
    embedder: CachedEmbedder, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    database = SwitchableDatabase(session_factory)
    runtime = Runtime(make_settings(tmp_path), embedder=embedder, session_factory=database, store=_memory(embedder))  # type: ignore[arg-type]
    with TestClient(create_app(runtime=runtime)) as client:
        body = {**GPT, "evaluations": [{"text": "Write a Python function that merges two lists.", "score": 1}]}
        assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201
        ready = client.get("/readyz")
        assert (ready.status_code, _public(ready.json())) == (200, {"status": "ready", "reranker_version": None})

        database.is_up = False
        ready = client.get("/readyz")
        assert ready.status_code == 200, "a database blip must not pull the replica from the load balancer"
        assert _public(ready.json()) == {"status": "degraded", "reranker_version": None}, "no details without the key"
        assert client.post("/v1/route", json={"query": "Reverse a list in Python."}).status_code == 200
        assert client.get("/v1/models").status_code == 503

        detailed = client.get("/readyz", headers=ADMIN).json()
        assert detailed["status"] == "degraded"
        assert detailed["checks"]["database"] == "unavailable (OperationalError)"
        assert detailed["checks"]["router"] == "ok" and detailed["checks"]["qdrant"] == "ok"
        assert "127.0.0.1" not in str(detailed) and "nowhere" not in str(detailed), "no raw driver text"

        database.is_up = True
        assert _public(client.get("/readyz").json()) == {"status": "ready", "reranker_version": None}
        assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_503_when_routing_cannot_answer(embedder: CachedEmbedder, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=UNREACHABLE)
    runtime = Runtime(
        settings,
        embedder=embedder,
        session_factory=make_session_factory(make_engine(UNREACHABLE)),
        store=_memory(embedder),
    )
    with TestClient(create_app(runtime=runtime)) as client:
        ready = client.get("/readyz")
        assert (ready.status_code, _public(ready.json())) == (503, {"status": "not ready", "reranker_version": None})
        detailed = client.get("/readyz", headers=_bearer()).json()
        assert detailed["checks"]["router"] == "not loaded"
        assert client.get("/healthz").status_code == 200


def test_cli_says_in_one_line_that_the_embedded_qdrant_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: CachedEmbedder
) -> None:
    monkeypatch.setenv("CAPPROF_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CAPPROF_QDRANT_PATH", raising=False)
    monkeypatch.delenv("CAPPROF_QDRANT_URL", raising=False)
    monkeypatch.delenv("CAPPROF_DATABASE_URL", raising=False)
    monkeypatch.setenv("CAPPROF_DEVICE", "cpu")
    upgrade_database(f"sqlite:///{tmp_path / 'capprof.db'}")
    monkeypatch.setattr(Runtime, "embedder", embedder)  # the shared test embedder (no second model load)
    holder = QdrantClient(path=str(tmp_path / "qdrant"))  # what a running server holds
    try:
        for args in (["route", "What is 2+2?"], ["reindex"], ["serve", "--port", "1"]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 2, result.output
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and "in use by another process" in lines[0], result.output
            assert "Traceback" not in result.output
    finally:
        holder.close()
