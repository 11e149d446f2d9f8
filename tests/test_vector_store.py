"""The Qdrant adapter, embedded in memory and on disk through the same class."""

from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient

from profiling.embedding_cache import CachedEmbedder
from service.settings import Settings
from service.store.vector_store import EVAL_QUERIES, VectorStore

STORED = [
    "What is the boiling point of water at sea level in Celsius?",
    "Write a SQL query that lists customers with more than five orders.",
    "Who painted the ceiling of the Sistine Chapel?",
    "Explain the difference between mitosis and meiosis.",
]


def _fill(store: VectorStore, embedder: CachedEmbedder) -> None:
    payloads = [{"benchmark": "demo" if i % 2 == 0 else "other", "text": t} for i, t in enumerate(STORED)]
    store.upsert(EVAL_QUERIES, list(range(1, len(STORED) + 1)), embedder.embed(STORED), payloads, batch_size=3)


def test_paraphrase_finds_the_stored_query(store: VectorStore, embedder: CachedEmbedder) -> None:
    _fill(store, embedder)
    hits = store.search(EVAL_QUERIES, embedder.embed(["Which artist decorated the Sistine Chapel ceiling?"]), k=2)
    assert hits[0][0].payload["text"] == STORED[2]
    assert hits[0][0].score > hits[0][1].score


def test_payload_filter_restricts_results(store: VectorStore, embedder: CachedEmbedder) -> None:
    _fill(store, embedder)
    hits = store.search(
        EVAL_QUERIES, embedder.embed(["Who painted the Sistine Chapel?"]), k=4, where={"benchmark": "demo"}
    )
    assert hits[0]
    assert {h.payload["benchmark"] for h in hits[0]} == {"demo"}


def test_snapshot_agrees_with_qdrant_search(store: VectorStore, embedder: CachedEmbedder) -> None:
    _fill(store, embedder)
    index, payloads = store.snapshot(EVAL_QUERIES)
    query = embedder.embed(["How do cells divide?"])
    rows, sims = index.search(query, 3)
    hits = store.search(EVAL_QUERIES, query, k=3)[0]
    assert [int(index.ids[r]) for r in rows[0]] == [h.id for h in hits]
    np.testing.assert_allclose(sims[0], [h.score for h in hits], atol=1e-5)
    assert len(payloads) == len(STORED)


def test_embedded_on_disk_store_persists(embedder: CachedEmbedder, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, qdrant_path=str(tmp_path / "qdrant"))
    store = VectorStore.from_settings(settings, embedder.dimension)
    _fill(store, embedder)
    store.close()
    reopened = VectorStore(QdrantClient(path=str(tmp_path / "qdrant")), embedder.dimension)
    assert reopened.count(EVAL_QUERIES) == len(STORED)
    reopened.close()


def test_qdrant_search_backend_routes_like_the_snapshot(runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from service.registry.importer import import_data
    from service.routing.engine import RouteOptions, RoutingEngine
    from tests.conftest import shared_family, small_family

    with runtime.transaction() as session:
        import_data(
            session,
            runtime.store,
            runtime.embedder,
            runtime.settings,
            small_family(tmp_path, shared_family("zeroeval"), 120),
            progress=False,
        )
    queries = ["What is 17 * 23?", "def f(x): return x[::-1]\nassert f('abc') == ??", "Who wrote Hamlet?"]
    vectors = runtime.embedder.embed(queries)
    chars = np.array([len(q) for q in queries], float)
    decisions = {}
    for backend in ("snapshot", "qdrant"):
        engine = RoutingEngine(runtime.settings.model_copy(update={"search_backend": backend}))
        with runtime.sessions() as session:
            engine.reload(session, runtime.store)
        decisions[backend] = engine.decide(vectors, chars, [RouteOptions(top_n=5)] * len(queries))
    for snap, qdrant in zip(decisions["snapshot"], decisions["qdrant"], strict=True):
        assert [a.model for a in snap.alternatives] == [a.model for a in qdrant.alternatives]
        np.testing.assert_allclose(
            [a.p_correct for a in snap.alternatives], [a.p_correct for a in qdrant.alternatives], atol=1e-5
        )
        assert [d.name for d in snap.profile.domains] == [d.name for d in qdrant.profile.domains]
