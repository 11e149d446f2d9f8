"""The routing-state generation: which writes bump it, and incremental refreshes that equal a full reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from profiling.embedding_cache import CachedEmbedder
from service.registry.catalog import EvaluationInput, add_dimension, add_evaluations
from service.registry.importer import import_data
from service.registry.reindex import reconcile, reindex_all
from service.routing import engine as engine_module
from service.routing import state as state_module
from service.routing.state import RouterState, load_state
from service.runtime import Runtime
from service.store.generation import (
    DIMENSION,
    EVALUATIONS,
    FULL,
    MODEL,
    bump_generation,
    changes_since,
    current_generation,
    written_generation,
)
from service.store.orm import EvalQuery, Exemplar, LlmModel, RoutingChange
from service.store.vector_store import EVAL_QUERIES, EXEMPLARS
from tests.conftest import ADMIN, memory_store, shared_family, small_family

MATH = [
    "A baker sells 24 muffins in the morning and twice as many in the afternoon. How many muffins in total?",
    "Tom reads 15 pages a day for 6 days. How many pages does he read?",
    "What is the derivative of x squared plus three x?",
]


def _kinds(db: Session, after: int) -> list[tuple[str, int | None, int | None]]:
    rows = db.execute(
        select(RoutingChange.kind, RoutingChange.model_id, RoutingChange.dimension_id)
        .where(RoutingChange.generation > after)
        .order_by(RoutingChange.generation)
    ).all()
    return [(k, m, d) for k, m, d in rows]


def test_a_bump_is_taken_when_its_transaction_commits(session_factory: sessionmaker[Session]) -> None:
    def generation() -> int:
        with session_factory() as reader:
            return current_generation(reader)

    start = generation()
    with session_factory() as session:
        with session.begin():
            bump_generation(session, MODEL, model_id=7)
            bump_generation(session, DIMENSION, dimension_id=3)
            bump_generation(session, MODEL, model_id=7)  # the same change twice is one event
            assert current_generation(session) == start  # nothing taken before the commit
        assert generation() == start + 2
        assert written_generation(session) == start + 2

        with pytest.raises(RuntimeError), session.begin():
            bump_generation(session, EVALUATIONS, model_id=7)
            raise RuntimeError("the write fails")
        with session.begin():
            pass  # the rolled-back change must not ride along with a later commit
    assert generation() == start + 2
    with session_factory() as reader:
        changes = changes_since(reader, start, start + 2)
        assert changes is not None
        assert [(c.kind, c.model_id, c.dimension_id) for c in changes] == [(MODEL, 7, None), (DIMENSION, None, 3)]
        assert changes_since(reader, start, start + 3) is None  # a missing event (pruned): reload whole
        with pytest.raises(ValueError, match="unknown routing change kind"):
            bump_generation(reader, "everything")


def test_every_routing_write_bumps_the_generation(client: TestClient, runtime: Runtime, db: Session) -> None:
    start = current_generation(db)
    body = {"name": "gen-model", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2}
    assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201
    model_id = db.scalar(select(LlmModel.id).where(LlmModel.name == "gen-model"))
    evaluations = {"evaluations": [{"text": t, "score": 1} for t in MATH]}
    assert client.post("/v1/models/gen-model/evaluations", json=evaluations, headers=ADMIN).status_code == 200
    dimension = {"kind": "domain", "name": "gen-arithmetic", "description": "sums", "exemplars": MATH[:2]}
    created = client.post("/v1/dimensions", json=dimension, headers=ADMIN)
    assert created.status_code == 201
    assert client.patch("/v1/models/gen-model", json={"status": "disabled"}, headers=ADMIN).status_code == 200
    assert client.delete("/v1/models/gen-model", headers=ADMIN).status_code == 204

    kinds = _kinds(db, start)
    assert (MODEL, model_id, None) == kinds[0]
    assert (EVALUATIONS, model_id, None) in kinds
    assert (DIMENSION, None, created.json()["id"]) in kinds
    assert kinds[-2:] == [(MODEL, model_id, None), (MODEL, model_id, None)]
    # the writing process serves its own writes at once
    assert runtime.router.generation == current_generation(db)

    # a refused write changes nothing, the generation included
    before = current_generation(db)
    assert client.post("/v1/dimensions", json=dimension, headers=ADMIN).status_code == 409
    assert current_generation(db) == before


def _assert_same_state(incremental: RouterState, full: RouterState) -> None:
    assert incremental.models.names == full.models.names
    assert incremental.profiler.catalog.ids == full.profiler.catalog.ids
    np.testing.assert_allclose(incremental.means, full.means, equal_nan=True)
    np.testing.assert_allclose(incremental.profile, full.profile, equal_nan=True)
    assert incremental.query_index is not None and full.query_index is not None
    assert incremental.raw_outcomes is not None and full.raw_outcomes is not None
    order = np.argsort(incremental.query_index.ids)
    assert incremental.query_index.ids[order].tolist() == sorted(full.query_index.ids.tolist())
    full_order = np.argsort(full.query_index.ids)
    np.testing.assert_array_equal(incremental.raw_outcomes[order], full.raw_outcomes[full_order])
    assert incremental.exemplar_index is not None and full.exemplar_index is not None
    assert sorted(incremental.exemplar_index.ids.tolist()) == sorted(full.exemplar_index.ids.tolist())
    vectors = np.stack([full.query_index.vectors[0], incremental.query_index.vectors[-1]])
    for kind in ("capability", "domain"):
        a = incremental.profiler.exemplars[kind].index.search(vectors, 5)[1]
        b = full.profiler.exemplars[kind].index.search(vectors, 5)[1]
        np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(
        incremental.profiler.profile_vectors(vectors)[0], full.profiler.profile_vectors(vectors)[0], rtol=1e-6
    )


def test_incremental_refreshes_equal_a_full_reload(
    client: TestClient, runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    family = small_family(tmp_path, shared_family("zeroeval"), 60)
    with runtime.transaction() as session:
        import_data(session, runtime.store, runtime.embedder, runtime.settings, family, progress=False)
    runtime.refresh_router()  # an import is a FULL change: reloaded whole
    models = [m["name"] for m in client.get("/v1/models").json()]

    def no_full_reload(*_: object, **__: object) -> RouterState:
        raise AssertionError("a full reload where an incremental refresh was expected")

    monkeypatch.setattr(state_module, "load_state", no_full_reload)
    monkeypatch.setattr(engine_module, "load_state", no_full_reload)

    body = {"name": "inc-model", "input_usd_per_mtok": 0.05, "output_usd_per_mtok": 0.05}
    assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201
    new_queries = {"evaluations": [{"text": t, "score": 1, "cost_usd": 0.001} for t in MATH]}
    assert client.post("/v1/models/inc-model/evaluations", json=new_queries, headers=ADMIN).status_code == 200
    assert (
        client.post(
            f"/v1/models/{models[0]}/evaluations", json={"evaluations": [{"text": MATH[0], "score": 0}]}, headers=ADMIN
        ).status_code
        == 200
    )
    dimension = {"kind": "domain", "name": "inc-arithmetic", "description": "sums", "exemplars": MATH}
    assert client.post("/v1/dimensions", json=dimension, headers=ADMIN).status_code == 201
    assert client.patch(f"/v1/models/{models[1]}", json={"status": "disabled"}, headers=ADMIN).status_code == 200
    assert client.patch(f"/v1/models/{models[2]}", json={"input_usd_per_mtok": 9.0}, headers=ADMIN).status_code == 200
    assert client.delete(f"/v1/models/{models[3]}", headers=ADMIN).status_code == 204

    monkeypatch.undo()
    incremental = runtime.router.state
    with runtime.sessions() as session:
        full = load_state(session, runtime.store, runtime.settings)
    _assert_same_state(incremental, full)
    assert "inc-model" in incremental.models.names and models[1] not in incremental.models.names
    assert "inc-arithmetic" in incremental.profiler.catalog.names


def test_many_writes_are_applied_by_one_refresh(client: TestClient, runtime: Runtime) -> None:
    body = {"name": "coalesced", "input_usd_per_mtok": 0.05, "output_usd_per_mtok": 0.05}
    assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201

    served = runtime.router.generation
    for i in range(20):  # written elsewhere (another replica, the CLI): nothing refreshes this process yet
        with runtime.transaction() as session:
            model = session.scalar(select(LlmModel).where(LlmModel.name == "coalesced"))
            assert model is not None
            add_evaluations(
                session,
                runtime.store,
                runtime.embedder,
                runtime.settings,
                model,
                [EvaluationInput(score=float(i % 2), text=f"{MATH[i % 3]} (case {i})")],
            )
    assert runtime.router.generation == served
    refreshes = runtime.refreshes
    assert runtime.refresh_router()
    assert runtime.refreshes == refreshes + 1
    with runtime.sessions() as session:
        assert runtime.router.generation == current_generation(session)
    assert runtime.router.state.evaluated_queries >= 20
    assert not runtime.refresh_router()  # nothing new: no work


def test_a_full_change_reloads_everything(runtime: Runtime, db: Session) -> None:
    runtime.reload_router()
    with runtime.transaction() as session:
        bump_generation(session, FULL)
    assert runtime.refresh_router()
    assert runtime.router.generation == current_generation(db)


def test_a_committed_write_is_not_reported_failed_when_the_refresh_after_it_fails(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refresh_fails(*_: object) -> bool:
        raise ConnectionError("database went away after the commit")

    monkeypatch.setattr(runtime, "refresh_router", refresh_fails)
    body = {"name": "written-anyway", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.1}
    assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201
    monkeypatch.undo()
    assert client.get("/v1/models/written-anyway").status_code == 200
    assert runtime.refresh_router()  # the watcher's next look applies it
    assert "written-anyway" in runtime.router.state.models.names


def test_reconcile_fills_a_replica_store_from_the_database(runtime: Runtime, embedder: CachedEmbedder) -> None:
    with runtime.transaction() as session:
        add_dimension(session, runtime.store, embedder, "domain", "reconciled", "probe", MATH)
        model = LlmModel(name="reconcile-model")
        session.add(model)
        session.flush()
        add_evaluations(
            session, runtime.store, embedder, runtime.settings, model, [EvaluationInput(score=1, text=MATH[0])]
        )
    replica = memory_store(embedder)  # another replica's embedded Qdrant: empty
    with runtime.sessions() as session:
        exemplar_ids = set(session.scalars(select(Exemplar.id)))
        query_ids = set(session.scalars(select(EvalQuery.id)))
        added = reconcile(session, replica, embedder)
        assert added == {EXEMPLARS: len(exemplar_ids), EVAL_QUERIES: len(query_ids)}
        assert replica.ids(EXEMPLARS) == exemplar_ids and replica.ids(EVAL_QUERIES) == query_ids
        index, payloads = replica.snapshot(EXEMPLARS)
        source, _ = runtime.store.snapshot(EXEMPLARS)
        np.testing.assert_allclose(index.vectors, source.vectors, atol=1e-5)  # the same vectors, embedded anew
        assert {p["dimension"] for p in payloads.values()} >= {"reconciled"}
        assert reconcile(session, replica, embedder) == {EXEMPLARS: 0, EVAL_QUERIES: 0}
    replica.close()


def test_reindex_is_a_full_change(runtime: Runtime, embedder: CachedEmbedder, db: Session) -> None:
    start = current_generation(db)
    with runtime.transaction() as session:
        reindex_all(session, runtime.store, embedder)
    assert [k for k, _, _ in _kinds(db, start)] == [FULL]
