"""Write operations on dimensions, exemplars and evaluation records, shared by the API and the CLI.

Order of writes: the database is flushed (ids), Qdrant is written, then the caller commits; if Qdrant
fails the database transaction rolls back, so a refused request changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from profiling.embedder import text_hash
from profiling.embedding_cache import CachedEmbedder
from profiling.model_profile import record_values
from profiling.query_profile import CAPABILITY, DOMAIN
from service.errors import ConflictError, NotFoundError
from service.registry.profiles import RecordChange, apply_record_changes, refresh_model_stats, store_query_profiles
from service.settings import Settings
from service.store import vector_journal
from service.store.generation import DIMENSION, EVALUATIONS, bump_generation
from service.store.orm import Dimension, EvalQuery, EvalRecord, Exemplar, LlmModel
from service.store.readers import load_profiler
from service.store.upsert import upsert
from service.store.vector_store import EVAL_QUERIES, EXEMPLARS, VectorStore

SEED_FILE = "dimensions.v2.json"


def load_dimension_seed() -> dict[str, Any]:
    return json.loads(resources.files("service.seed_data").joinpath(SEED_FILE).read_text("utf-8"))


def write_exemplars(
    session: Session, store: VectorStore, embedder: CachedEmbedder, dimension: Dimension, texts: Sequence[str]
) -> int:
    """Adds the exemplars a dimension does not have yet (by text hash); returns how many were new."""
    have = set(session.scalars(select(Exemplar.text_hash).where(Exemplar.dimension_id == dimension.id)))
    fresh = {text_hash(t): t for t in texts if t.strip() and text_hash(t) not in have}
    if not fresh:
        return 0
    rows = [Exemplar(dimension_id=dimension.id, text=t, text_hash=h) for h, t in fresh.items()]
    session.add_all(rows)
    session.flush()
    vectors = embedder.embed([r.text for r in rows])
    vector_journal.record(session, store, EXEMPLARS, [r.id for r in rows])
    store.upsert(
        EXEMPLARS,
        [r.id for r in rows],
        vectors,
        [{"dimension_id": dimension.id, "dimension": dimension.name, "kind": dimension.kind} for _ in rows],
    )
    bump_generation(session, DIMENSION, dimension_id=dimension.id)
    return len(rows)


def ensure_seed_dimensions(session: Session, store: VectorStore, embedder: CachedEmbedder) -> int:
    """Seeds the seven capabilities and the common domains with everyday exemplars; idempotent (a dimension of the
    same name, seeded or imported, gets the exemplars it lacks). Returns exemplars added."""
    added = 0
    seed = load_dimension_seed()
    for kind, key in ((CAPABILITY, "capabilities"), (DOMAIN, "domains")):
        for item in seed.get(key, []):
            dimension = session.scalar(select(Dimension).where(Dimension.name == item["name"]))
            if dimension is None:
                dimension = Dimension(kind=kind, name=item["name"], description=item["description"], source="seed")
                session.add(dimension)
            dimension.catch_all = bool(item.get("catch_all", False))
            session.flush()
            added += write_exemplars(session, store, embedder, dimension, item["exemplars"])
    return added


def add_dimension(
    session: Session,
    store: VectorStore,
    embedder: CachedEmbedder,
    kind: str,
    name: str,
    description: str,
    exemplars: Sequence[str],
) -> Dimension:
    if session.scalar(select(Dimension.id).where(Dimension.name == name)) is not None:
        raise ConflictError(f"dimension {name!r} already exists")
    dimension = Dimension(kind=kind, name=name, description=description, source="api")
    session.add(dimension)
    session.flush()
    if not write_exemplars(session, store, embedder, dimension, exemplars):
        bump_generation(session, DIMENSION, dimension_id=dimension.id)  # a column without exemplars yet
    return dimension


@dataclass(frozen=True)
class EvaluationInput:
    """One outcome for a model: an existing query (benchmark + query_id) or a new one (text)."""

    score: float
    benchmark: str = "api"
    query_id: str | None = None
    text: str | None = None
    cost_usd: float | None = None
    output_tokens: int | None = None


def _resolve_queries(
    session: Session, store: VectorStore, embedder: CachedEmbedder, settings: Settings, items: Sequence[EvaluationInput]
) -> list[int]:
    """Database ids of the items' queries, creating (and embedding and profiling) new ones."""
    keys = [(i.benchmark, i.query_id or text_hash(i.text or "")[:32]) for i in items]
    known = {
        (q.benchmark, q.external_id): q.id
        for q in session.execute(
            select(EvalQuery.id, EvalQuery.benchmark, EvalQuery.external_id).where(
                EvalQuery.external_id.in_([k[1] for k in keys])
            )
        )
    }
    new: dict[tuple[str, str], EvaluationInput] = {}
    for position, (item, key) in enumerate(zip(items, keys, strict=True)):
        if key in known or key in new:
            continue
        if not item.text:
            raise NotFoundError(f"evaluations[{position}].query_id: no query {key[1]!r} in benchmark {key[0]!r}")
        new[key] = item
    if new:
        rows = [
            EvalQuery(benchmark=b, external_id=e, text=i.text or "", text_hash=text_hash(i.text or ""))
            for (b, e), i in new.items()
        ]
        session.add_all(rows)
        session.flush()
        vectors = embedder.embed([r.text for r in rows])
        vector_journal.record(session, store, EVAL_QUERIES, [r.id for r in rows])
        store.upsert(EVAL_QUERIES, [r.id for r in rows], vectors, [{"benchmark": r.benchmark} for r in rows])
        store_query_profiles(session, load_profiler(session, store, settings), [r.id for r in rows], vectors)
        known.update({(r.benchmark, r.external_id): r.id for r in rows})
    return [known[k] for k in keys]


def add_evaluations(
    session: Session,
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    model: LlmModel,
    items: Sequence[EvaluationInput],
    source: str = "api",
) -> int:
    """Upserts a model's outcomes and updates its profile incrementally; returns records written."""
    query_ids = _resolve_queries(session, store, embedder, settings, items)
    latest = dict(zip(query_ids, items, strict=True))  # a query given twice: the last outcome counts
    old = {
        r.query_id: record_values(
            r.score, r.cost_usd if r.cost_usd is not None else float("nan"), settings.cost_penalty
        )
        for r in session.execute(
            select(EvalRecord.query_id, EvalRecord.score, EvalRecord.cost_usd).where(
                EvalRecord.model_id == model.id, EvalRecord.source == source, EvalRecord.query_id.in_(list(latest))
            )
        )
    }
    upsert(
        session,
        EvalRecord.__table__,  # type: ignore[arg-type]
        [
            {
                "model_id": model.id,
                "query_id": q,
                "score": i.score,
                "cost_usd": i.cost_usd,
                "output_tokens": i.output_tokens,
                "source": source,
            }
            for q, i in latest.items()
        ],
        keys=("model_id", "query_id", "source"),
        update=("score", "cost_usd", "output_tokens"),
    )
    changes = [
        RecordChange(
            q,
            float(old[q]) if q in old else None,
            float(
                record_values(i.score, i.cost_usd if i.cost_usd is not None else float("nan"), settings.cost_penalty)
            ),
        )
        for q, i in latest.items()
    ]
    apply_record_changes(session, model.id, changes)
    refresh_model_stats(session, [model.id])
    bump_generation(session, EVALUATIONS, model_id=model.id)  # every record writer (API, aptitude, feedback)
    return len(latest)
