"""Qdrant adapter: one class for embedded (path / :memory:) and server (url) Qdrant."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from profiling.vector_index import VectorIndex
from service.errors import StoreBusyError
from service.settings import Settings

EXEMPLARS = "exemplars"
EVAL_QUERIES = "eval_queries"
COLLECTIONS = (EXEMPLARS, EVAL_QUERIES)


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    payload: dict[str, Any]


class VectorStore:
    """Collections are created on first use with the embedder's dimension and cosine distance."""

    def __init__(self, client: QdrantClient, dimension: int, prefix: str = "capprof_") -> None:
        self.client = client
        self.dimension = dimension
        self.prefix = prefix
        self._ready: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings, dimension: int) -> VectorStore:
        if settings.qdrant_url:
            api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
            client = QdrantClient(url=settings.qdrant_url, api_key=api_key, timeout=10)
        elif settings.resolved_qdrant_path == ":memory:":
            client = QdrantClient(location=":memory:")
        else:
            try:
                client = QdrantClient(path=settings.resolved_qdrant_path)
            except RuntimeError as exc:
                if "already accessed" not in str(exc):
                    raise
                raise StoreBusyError(
                    f"the embedded Qdrant folder {settings.resolved_qdrant_path} is in use by another process "
                    "(a running server?): stop it, use the server's HTTP API, or set CAPPROF_QDRANT_URL"
                ) from exc
        return cls(client, dimension)

    def _name(self, collection: str) -> str:
        return self.prefix + collection

    def ensure(self, collection: str) -> None:
        name = self._name(collection)
        if name in self._ready:
            return
        if not self.client.collection_exists(name):
            self.client.create_collection(
                name, vectors_config=models.VectorParams(size=self.dimension, distance=models.Distance.COSINE)
            )
        self._ready.add(name)

    def recreate(self, collection: str) -> None:
        name = self._name(collection)
        if self.client.collection_exists(name):
            self.client.delete_collection(name)
        self._ready.discard(name)
        self.ensure(collection)

    def upsert(
        self,
        collection: str,
        ids: Sequence[int],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
        batch_size: int = 512,
    ) -> None:
        self.ensure(collection)
        for start in range(0, len(ids), batch_size):
            end = start + batch_size
            self.client.upsert(
                self._name(collection),
                points=models.Batch(
                    ids=[int(i) for i in ids[start:end]],
                    vectors=vectors[start:end].tolist(),
                    payloads=list(payloads[start:end]),
                ),
                wait=True,
            )

    def stored_points(self, collection: str, ids: Sequence[int]) -> dict[int, tuple[list[float], dict[str, Any]]]:
        """The stored vector (as stored, not normalised) and payload of each of `ids` that exists: what a rollback
        restores."""
        self.ensure(collection)
        found: dict[int, tuple[list[float], dict[str, Any]]] = {}
        for start in range(0, len(ids), 1024):
            points = self.client.retrieve(
                self._name(collection),
                [int(i) for i in ids[start : start + 1024]],
                with_vectors=True,
                with_payload=True,
            )
            for point in points:
                found[int(point.id)] = (list(point.vector), dict(point.payload or {}))  # type: ignore[arg-type]
        return found

    def delete(self, collection: str, ids: Iterable[int]) -> None:
        self.ensure(collection)
        self.client.delete(self._name(collection), points_selector=models.PointIdsList(points=list(ids)))

    def search(
        self, collection: str, vectors: np.ndarray, k: int, where: dict[str, Any] | None = None
    ) -> list[list[Hit]]:
        """Nearest points per query vector; `where` = exact payload matches (all must hold)."""
        self.ensure(collection)
        query_filter = None
        if where:
            query_filter = models.Filter(
                must=[
                    models.FieldCondition(key=key, match=models.MatchValue(value=value)) for key, value in where.items()
                ]
            )
        requests = [
            models.QueryRequest(query=vector.tolist(), limit=k, filter=query_filter, with_payload=True)
            for vector in vectors
        ]
        responses = self.client.query_batch_points(self._name(collection), requests=requests)
        return [
            [Hit(int(point.id), float(point.score), dict(point.payload or {})) for point in response.points]
            for response in responses
        ]

    def count(self, collection: str) -> int:
        self.ensure(collection)
        return self.client.count(self._name(collection), exact=True).count

    def snapshot(self, collection: str, batch_size: int = 2048) -> tuple[VectorIndex, dict[int, dict[str, Any]]]:
        """The whole collection as an in-memory index plus payloads, for the routing hot path."""
        self.ensure(collection)
        ids: list[int] = []
        rows: list[list[float]] = []
        payloads: dict[int, dict[str, Any]] = {}
        offset = None
        while True:
            points, offset = self.client.scroll(
                self._name(collection), limit=batch_size, offset=offset, with_vectors=True, with_payload=True
            )
            for point in points:
                ids.append(int(point.id))
                rows.append(point.vector)  # type: ignore[arg-type]
                payloads[int(point.id)] = dict(point.payload or {})
            if offset is None:
                break
        if not ids:
            return VectorIndex.empty(self.dimension), payloads
        vectors = np.asarray(rows, dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return VectorIndex(np.asarray(ids, np.int64), vectors), payloads

    def retrieve(self, collection: str, ids: Sequence[int]) -> tuple[VectorIndex, dict[int, dict[str, Any]]]:
        """The given points that exist (vectors and payloads), in ascending id order: incremental refreshes."""
        self.ensure(collection)
        found: dict[int, tuple[list[float], dict[str, Any]]] = {}
        wanted = sorted({int(i) for i in ids})
        for start in range(0, len(wanted), 1024):
            for point in self.client.retrieve(
                self._name(collection), ids=wanted[start : start + 1024], with_vectors=True, with_payload=True
            ):
                found[int(point.id)] = (point.vector, dict(point.payload or {}))  # type: ignore[assignment]
        if not found:
            return VectorIndex.empty(self.dimension), {}
        order = sorted(found)
        vectors = np.asarray([found[i][0] for i in order], dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return VectorIndex(np.asarray(order, np.int64), vectors), {i: found[i][1] for i in order}

    def existing(self, collection: str, ids: Sequence[int]) -> set[int]:
        """Which of these point ids the collection holds."""
        self.ensure(collection)
        wanted = sorted({int(i) for i in ids})
        found: set[int] = set()
        for start in range(0, len(wanted), 4096):
            points = self.client.retrieve(
                self._name(collection), ids=wanted[start : start + 4096], with_vectors=False, with_payload=False
            )
            found.update(int(p.id) for p in points)
        return found

    def ids(self, collection: str, batch_size: int = 8192) -> set[int]:
        """Every point id of a collection, without vectors (to find what a local copy is missing)."""
        self.ensure(collection)
        found: set[int] = set()
        offset = None
        while True:
            points, offset = self.client.scroll(
                self._name(collection), limit=batch_size, offset=offset, with_vectors=False, with_payload=False
            )
            found.update(int(p.id) for p in points)
            if offset is None:
                return found

    def ping(self) -> None:
        """Raises when the store cannot answer."""
        self.client.get_collections()

    def close(self) -> None:
        self.client.close()
