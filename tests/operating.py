"""Helpers for the operating tests (keys, budgets, feedback, logs): a small routable catalogue and API keys."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from profiling.embedding_cache import CachedEmbedder
from service.app import create_app
from service.registry.keys import create_key, revoke_key
from service.runtime import Runtime
from service.store.vector_store import VectorStore
from tests.conftest import ADMIN, make_settings

KEY_SECRET = "test-key-secret-0123456789abcdef-not-for-production"
CODING = [
    "Write a Python function that merges two sorted lists.",
    "Implement binary search in Java and explain its complexity.",
    "Fix the off-by-one error in this C loop: for (i = 0; i <= n; i++) a[i] = 0;",
]
HISTORY = [
    "In which year did the French Revolution begin?",
    "Who was the first emperor of Rome?",
    "What caused the fall of the Western Roman Empire?",
]
MODELS = [
    # a cheap model that codes badly and knows history, and a dear one that is right everywhere
    {
        "name": "cheap-model",
        "provider": "acme",
        "input_usd_per_mtok": 0.1,
        "output_usd_per_mtok": 0.4,
        "evaluations": [{"text": t, "score": 0, "output_tokens": 200} for t in CODING]
        + [{"text": t, "score": 1, "output_tokens": 200} for t in HISTORY],
    },
    {
        "name": "dear-model",
        "provider": "globex",
        "input_usd_per_mtok": 5.0,
        "output_usd_per_mtok": 20.0,
        "evaluations": [{"text": t, "score": 1, "output_tokens": 200} for t in CODING + HISTORY],
    },
]


@contextmanager
def operating_client(
    tmp: Path,
    embedder: CachedEmbedder,
    sessions: sessionmaker[Session],
    store: VectorStore,
    **overrides: object,
) -> Iterator[tuple[TestClient, Runtime]]:
    """An app over the test transaction with the two models registered; keys required unless overridden."""
    settings = make_settings(tmp, key_secret=KEY_SECRET, **{"require_keys": True, **overrides})
    runtime = Runtime(settings, embedder=embedder, session_factory=sessions, store=store)
    with TestClient(create_app(runtime=runtime)) as client:
        for model in MODELS:
            response = client.post("/v1/models", json=model, headers=ADMIN)
            assert response.status_code == 201, response.text
        yield client, runtime


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_key(runtime: Runtime, name: str, scope: str, **limits: float) -> str:
    with runtime.transaction() as session:
        return create_key(
            session,
            runtime.settings.resolved_key_secret,
            name,
            scope,
            limits.get("default_lambda"),
            limits.get("monthly_budget_usd"),
        ).key


def revoked_key(runtime: Runtime, name: str) -> str:
    key = new_key(runtime, name, "admin")
    with runtime.transaction() as session:
        revoke_key(session, name)
    return key


def give_feedback(client: TestClient, headers: dict[str, str], **body: object) -> httpx.Response:
    """POST /v1/feedback, then wait for the routing-state reload it asked for: the reload runs on another thread,
    and the tests' single database connection must not be used by two threads at once."""
    response = client.post("/v1/feedback", json=body, headers=headers)
    assert client.app.state.reloader.settle(60)  # type: ignore[attr-defined]
    return response
