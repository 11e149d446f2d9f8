"""Aptitude and re-ranker surfaces of the live service, on a small real import."""

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from profiling.embedding_cache import CachedEmbedder
from profiling.model_sat import ModelSatConfig
from service.registry.aptitude import build_test
from service.registry.checkpoints import activate, train_checkpoint
from service.registry.importer import import_data
from service.runtime import Runtime, upgrade_database
from service.store.vector_store import VectorStore
from tests.conftest import ADMIN, ThrowawayDatabases, make_settings, shared_family, small_family

FAST = ModelSatConfig(epochs=2, hidden=32, model_dim=16)


@pytest.fixture
def trained(databases: ThrowawayDatabases, embedder: CachedEmbedder, store: VectorStore, tmp_path: Path) -> Runtime:
    """A runtime on a database of its own: the service's checkpoint watcher queries it from another thread,
    which the shared single-connection test transaction cannot serve."""
    url = databases.new()
    upgrade_database(url)
    runtime = Runtime(make_settings(tmp_path, database_url=url), embedder=embedder, store=store)
    family = small_family(tmp_path, shared_family("zeroeval"), 240)
    with runtime.transaction() as session:
        import_data(session, runtime.store, runtime.embedder, runtime.settings, family, progress=False)
        build_test(session, runtime.store)
        for _ in range(2):
            train_checkpoint(session, runtime.store, runtime.embedder, runtime.settings, FAST)
    return runtime


def test_aptitude_test_is_served_for_running_a_new_model(trained: Runtime) -> None:
    runtime = trained
    from service.app import create_app

    with TestClient(create_app(runtime=runtime)) as client:
        body = client.get("/v1/aptitude").json()
    assert body["version"] == 1
    assert body["tasks"] and all(task["description"] for task in body["tasks"])
    items = [item for task in body["tasks"] for item in task["items"]]
    assert all(item["text"] for item in items)
    assert len({item["id"] for item in items}) == len(items)


def test_activation_switches_the_live_reranker(trained: Runtime) -> None:
    runtime = trained
    runtime.settings.refresh_interval_s = 0.2
    from service.app import create_app

    with TestClient(create_app(runtime=runtime)) as client:
        ready = client.get("/readyz").json()
        assert ready["reranker_version"] is None
        assert any("re-ranker" in w for w in ready["warnings"])
        assert client.post("/v1/route", json={"query": "What is 12 * 7?"}).json()["reranker_version"] is None

        assert client.post("/v1/reranker/activate", json={"version": 1}, headers=ADMIN).status_code == 200
        assert client.get("/readyz").json()["reranker_version"] == 1
        routed = client.post("/v1/route", json={"query": "What is 12 * 7?", "explain": True}).json()
        assert routed["reranker_version"] == 1
        assert routed["contributions"][routed["model"]]["reranker"] > 0

        # activated elsewhere (the CLI writes the database): the running service follows
        with runtime.transaction() as session:
            activate(session, 2)
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["reranker_version"] != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/readyz").json()["reranker_version"] == 2
        versions = [c["version"] for c in client.get("/v1/reranker").json() if c["active"]]
        assert versions == [2]

        assert client.post("/v1/reranker/activate", json={"version": 99}, headers=ADMIN).status_code == 404
        assert client.post("/v1/reranker/activate", json={"version": 1}).status_code == 401


def test_a_new_model_is_onboarded_by_its_aptitude_answers(trained: Runtime) -> None:
    runtime = trained
    from service.app import create_app

    with TestClient(create_app(runtime=runtime)) as client:
        client.post("/v1/reranker/activate", json={"version": 1}, headers=ADMIN)
        items = [item["id"] for task in client.get("/v1/aptitude").json()["tasks"] for item in task["items"]]
        body = {"name": "fresh-model", "input_usd_per_mtok": 0.01, "output_usd_per_mtok": 0.01}
        assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201

        answers = {"answers": [{"item_id": i, "score": 1} for i in items]}
        result = client.post("/v1/models/fresh-model/aptitude", json=answers, headers=ADMIN)
        assert result.status_code == 200, result.text
        assert result.json()["answered"] == len(items)
        assert all(t["accuracy"] == 1.0 for t in result.json()["aptitude"])
        assert client.get("/v1/models/fresh-model").json()["evaluations"] == len(items)

        # right on every item and nearly free: it should now be the choice, re-ranked by Model-SAT
        routed = client.post(
            "/v1/route", json={"query": "Natalia sold 48 clips. How many in total?", "lambda": 0.1}
        ).json()
        assert routed["model"] == "fresh-model"
        assert routed["reranker_version"] == 1

        bad = client.post(
            "/v1/models/fresh-model/aptitude", json={"answers": [{"item_id": -5, "score": 1}]}, headers=ADMIN
        )
        assert bad.status_code == 422
        assert "answers[0].item_id" in bad.json()["detail"]
        stale = client.post("/v1/models/fresh-model/aptitude", json={"version": 7, **answers}, headers=ADMIN)
        assert stale.status_code == 409
