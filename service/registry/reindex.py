"""Rebuilds Qdrant from Postgres: the relational store is the truth, vectors are derived."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from profiling.embedding_cache import CachedEmbedder
from service.store.generation import FULL, bump_generation
from service.store.orm import Dimension, EvalQuery, Exemplar, Feedback
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
        vectors = embedder.embed([r[1] for r in part])
        for i, row in enumerate(part):  # feedback queries keep their decision's vector (their text may be unstored)
            if len(row) > 5 and row[5] is not None:
                vectors[i] = np.frombuffer(row[5], np.float32)
        store.upsert(collection, [r[0] for r in part], vectors, [payload(r) for r in part])


def reindex_all(session: Session, store: VectorStore, embedder: CachedEmbedder, batch: int = 4096) -> dict[str, int]:
    exemplars = session.execute(
        select(Exemplar.id, Exemplar.text, Dimension.id, Dimension.name, Dimension.kind).join(Dimension)
    ).all()
    _rebuild(
        store, embedder, EXEMPLARS, exemplars, lambda r: {"dimension_id": r[2], "dimension": r[3], "kind": r[4]}, batch
    )
    queries = session.execute(
        select(
            EvalQuery.id,
            EvalQuery.text,
            EvalQuery.benchmark,
            EvalQuery.domain,
            EvalQuery.subject,
            Feedback.query_vector,
        ).outerjoin(Feedback, Feedback.eval_query_id == EvalQuery.id)
    ).all()
    _rebuild(
        store, embedder, EVAL_QUERIES, queries, lambda r: {"benchmark": r[2], "domain": r[3], "subject": r[4]}, batch
    )
    embedder.save()
    bump_generation(session, FULL)  # replicas re-read the rebuilt collections
    return {"exemplars": len(exemplars), "eval_queries": len(queries)}


def _same_count(session: Session, table: type[Exemplar] | type[EvalQuery], known: Collection[int] | None) -> bool:
    """Equal counts: nothing new to look for (the service adds these rows, it never deletes them one by one)."""
    return known is not None and session.scalar(select(func.count()).select_from(table)) == len(known)


def reconcile(
    session: Session,
    store: VectorStore,
    embedder: CachedEmbedder,
    known_exemplars: Collection[int] | None = None,
    known_queries: Collection[int] | None = None,
    collections: Collection[str] = (EXEMPLARS, EVAL_QUERIES),
    batch: int = 1024,
) -> dict[str, int]:
    """Embeds and upserts the points a replica's own (embedded) Qdrant lacks: rows another replica wrote.

    `known_*` are ids the caller already holds (its routing snapshot); None asks Qdrant for every id. Only
    rows not known are looked up, so a refresh after a few writes costs a few lookups. Returns points added.
    """
    added = {EXEMPLARS: 0, EVAL_QUERIES: 0}
    if EXEMPLARS in collections and not _same_count(session, Exemplar, known_exemplars):
        ids = set(session.scalars(select(Exemplar.id)))
        candidates = ids - set(known_exemplars if known_exemplars is not None else store.ids(EXEMPLARS))
        missing = sorted(candidates - store.existing(EXEMPLARS, sorted(candidates))) if candidates else []
        for start in range(0, len(missing), batch):
            rows = session.execute(
                select(Exemplar.id, Exemplar.text, Dimension.id, Dimension.name, Dimension.kind)
                .join(Dimension)
                .where(Exemplar.id.in_(missing[start : start + batch]))
            ).all()
            store.upsert(
                EXEMPLARS,
                [r[0] for r in rows],
                embedder.embed([r[1] for r in rows]),
                [{"dimension_id": r[2], "dimension": r[3], "kind": r[4]} for r in rows],
            )
            added[EXEMPLARS] += len(rows)
    if EVAL_QUERIES in collections and not _same_count(session, EvalQuery, known_queries):
        ids = set(session.scalars(select(EvalQuery.id)))
        candidates = ids - set(known_queries if known_queries is not None else store.ids(EVAL_QUERIES))
        missing = sorted(candidates - store.existing(EVAL_QUERIES, sorted(candidates))) if candidates else []
        for start in range(0, len(missing), batch):
            queries = session.execute(
                select(EvalQuery.id, EvalQuery.text, EvalQuery.benchmark, EvalQuery.domain, EvalQuery.subject).where(
                    EvalQuery.id.in_(missing[start : start + batch])
                )
            ).all()
            store.upsert(
                EVAL_QUERIES,
                [r[0] for r in queries],
                embedder.embed([r[1] for r in queries]),
                [{"benchmark": r[2], "domain": r[3], "subject": r[4]} for r in queries],
            )
            added[EVAL_QUERIES] += len(queries)
    return added


def reconcile_after_crash(session: Session, store: VectorStore, embedder: CachedEmbedder) -> dict[str, int]:
    """Makes an embedded Qdrant agree with the database after a crash, cheaply (ids only, no full rebuild).

    A process killed between writing points and committing leaves points without rows: they are deleted. A row
    without its point (a copy restored from an older backup) gets its vector again, through the embedding cache.
    Only for a Qdrant this process owns: on a shared server another replica's open transaction looks the same.
    """
    present: dict[str, set[int]] = {}
    deleted = 0
    for collection, id_column in ((EXEMPLARS, Exemplar.id), (EVAL_QUERIES, EvalQuery.id)):
        points = store.ids(collection)
        orphans = sorted(points - set(session.scalars(select(id_column))))
        if orphans:
            store.delete(collection, orphans)
        present[collection] = points - set(orphans)
        deleted += len(orphans)
    restored = reconcile(session, store, embedder, present[EXEMPLARS], present[EVAL_QUERIES])
    return {"orphans_deleted": deleted, "points_restored": sum(restored.values())}
