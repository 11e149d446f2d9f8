"""The Qdrant adapter, embedded in memory and on disk through the same class."""

from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient

from profiling.embedding_cache import CachedEmbedder
from service.settings import Settings
from service.vector_store import EVAL_QUERIES, VectorStore

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
