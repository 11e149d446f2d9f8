"""Rebuilds Qdrant from Postgres: the relational store is the truth, vectors are derived."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from profiling.embedding_cache import CachedEmbedder
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
    return {"exemplars": len(exemplars), "eval_queries": len(queries)}
