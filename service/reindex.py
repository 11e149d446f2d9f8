"""Rebuilds Qdrant from Postgres: the relational store is the truth, vectors are derived."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from profiling.embedding_cache import CachedEmbedder
from service.orm import Dimension, EvalQuery, Exemplar
from service.vector_store import EVAL_QUERIES, EXEMPLARS, VectorStore


def reindex_all(session: Session, store: VectorStore, embedder: CachedEmbedder, batch: int = 4096) -> dict[str, int]:
    store.recreate(EXEMPLARS)
    exemplars = session.execute(
        select(Exemplar.id, Exemplar.text, Dimension.id, Dimension.name, Dimension.kind).join(Dimension)
    ).all()
    for start in range(0, len(exemplars), batch):
        rows = exemplars[start : start + batch]
        store.upsert(
            EXEMPLARS,
            [r[0] for r in rows],
            embedder.embed([r[1] for r in rows]),
            [{"dimension_id": r[2], "dimension": r[3], "kind": r[4]} for r in rows],
        )
    store.recreate(EVAL_QUERIES)
    queries = session.execute(
        select(EvalQuery.id, EvalQuery.text, EvalQuery.benchmark, EvalQuery.domain, EvalQuery.subject)
    ).all()
    for start in range(0, len(queries), batch):
        part = queries[start : start + batch]
        store.upsert(
            EVAL_QUERIES,
            [r[0] for r in part],
            embedder.embed([r[1] for r in part]),
            [{"benchmark": r[2], "domain": r[3], "subject": r[4]} for r in part],
        )
    embedder.save()
    return {"exemplars": len(exemplars), "eval_queries": len(queries)}
