"""Rebuilds Qdrant from Postgres: the relational store is the truth, vectors are derived."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from profiling.embedding_cache import CachedEmbedder
from service.store.orm import Dimension, EvalQuery, Exemplar
from service.store.vector_store import EVAL_QUERIES, EXEMPLARS, VectorStore


def _rebuild(
    store: VectorStore,
    embedder: CachedEmbedder,
    collection: str,
    rows: Sequence[Any],
    payload: Callable[[Any], dict[str, Any]],
    batch: int,
) -> None:
    """Recreate a collection from (id, text, ...) rows, embedding through the cache."""
    store.recreate(collection)
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        store.upsert(collection, [r[0] for r in part], embedder.embed([r[1] for r in part]), [payload(r) for r in part])


def reindex_all(session: Session, store: VectorStore, embedder: CachedEmbedder, batch: int = 4096) -> dict[str, int]:
    exemplars = session.execute(
        select(Exemplar.id, Exemplar.text, Dimension.id, Dimension.name, Dimension.kind).join(Dimension)
    ).all()
    _rebuild(
        store, embedder, EXEMPLARS, exemplars, lambda r: {"dimension_id": r[2], "dimension": r[3], "kind": r[4]}, batch
    )
    queries = session.execute(
        select(EvalQuery.id, EvalQuery.text, EvalQuery.benchmark, EvalQuery.domain, EvalQuery.subject)
    ).all()
    _rebuild(
        store, embedder, EVAL_QUERIES, queries, lambda r: {"benchmark": r[2], "domain": r[3], "subject": r[4]}, batch
    )
    embedder.save()
    return {"exemplars": len(exemplars), "eval_queries": len(queries)}


def _point_ids(store: VectorStore, collection: str) -> set[int]:
    store.ensure(collection)
    ids: set[int] = set()
    offset = None
    while True:
        points, offset = store.client.scroll(
            store.prefix + collection, limit=4096, offset=offset, with_vectors=False, with_payload=False
        )
        ids.update(int(p.id) for p in points)
        if offset is None:
            return ids


def reconcile(session: Session, store: VectorStore, embedder: CachedEmbedder) -> dict[str, int]:
    """Makes an embedded Qdrant agree with the database after a crash, cheaply (ids only, no full rebuild).

    A process killed between writing points and committing leaves points without rows: they are deleted. A row
    without its point (a copy restored from an older backup) gets its vector again, through the embedding cache.
    Only for a Qdrant this process owns: on a shared server another replica's open transaction looks the same.
    """
    counts = {"orphans_deleted": 0, "points_restored": 0}
    sources = {
        EXEMPLARS: (
            select(Exemplar.id, Exemplar.text, Dimension.id, Dimension.name, Dimension.kind).join(Dimension),
            Exemplar.id,
            lambda r: {"dimension_id": r[2], "dimension": r[3], "kind": r[4]},
        ),
        EVAL_QUERIES: (
            select(EvalQuery.id, EvalQuery.text, EvalQuery.benchmark, EvalQuery.domain, EvalQuery.subject),
            EvalQuery.id,
            lambda r: {"benchmark": r[2], "domain": r[3], "subject": r[4]},
        ),
    }
    for collection, (query, id_column, payload) in sources.items():
        rows = set(session.scalars(select(id_column)))
        points = _point_ids(store, collection)
        orphans = sorted(points - rows)
        if orphans:
            store.delete(collection, orphans)
        missing = rows - points
        if missing:
            found = session.execute(query.where(id_column.in_(sorted(missing)))).all()
            vectors = embedder.embed([r[1] for r in found])
            store.upsert(collection, [r[0] for r in found], vectors, [payload(r) for r in found])
        counts["orphans_deleted"] += len(orphans)
        counts["points_restored"] += len(missing)
    return counts
