"""`capprof import`: a data folder in the shared format into Postgres and Qdrant, in one transaction."""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from profiling.dataset import Family, find_families, read_family
from profiling.embedder import Vectors, text_hash
from profiling.embedding_cache import CachedEmbedder
from service.registry.catalog import ensure_capabilities, write_exemplars
from service.registry.profiles import rebuild_profiles
from service.settings import Settings
from service.store import vector_journal
from service.store.orm import Dimension, EvalQuery, EvalRecord, LlmModel
from service.store.upsert import upsert
from service.store.vector_store import EVAL_QUERIES, VectorStore


@dataclass
class ImportReport:
    families: list[str] = field(default_factory=list)
    models: int = 0
    queries: int = 0
    outcomes: int = 0
    missing_scores: int = 0
    exemplars_added: int = 0
    seconds_reading: float = 0.0
    seconds_embedding: float = 0.0
    seconds_writing: float = 0.0


def _exemplar_order(query_id: str) -> str:
    """A fixed pseudo-random order, so the same exemplars are chosen on every import."""
    return hashlib.sha256(query_id.encode()).hexdigest()


def _label_exemplars(family: Family, per_label: int) -> dict[str, list[str]]:
    """Up to `per_label` query texts for each domain label and each subject label."""
    by_label: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for q in family.queries:
        for label in sorted({q.domain, q.subject} - {""}):  # sorted: set order varies between processes
            by_label[label].append((_exemplar_order(q.query_id), q.text))
    return {label: [t for _, t in sorted(items)[:per_label]] for label, items in by_label.items()}


def _write_family(
    session: Session,
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    family: Family,
    vectors: Vectors,
) -> int:
    """Models, queries, outcomes, query points and label exemplars of one family."""
    upsert(
        session,
        LlmModel.__table__,  # type: ignore[arg-type]
        [
            {
                "name": m.name,
                "input_usd_per_mtok": m.input_usd_per_mtok,
                "output_usd_per_mtok": m.output_usd_per_mtok,
                "price_basis": m.price_basis,
                "status": "active",
            }
            for m in family.models
        ],
        keys=("name",),
        update=("input_usd_per_mtok", "output_usd_per_mtok", "price_basis"),
    )
    upsert(
        session,
        EvalQuery.__table__,  # type: ignore[arg-type]
        [
            {
                "benchmark": q.benchmark or family.name,
                "external_id": q.query_id,
                "domain": q.domain,
                "subject": q.subject,
                "text": q.text,
                "text_hash": text_hash(q.text),
            }
            for q in family.queries
        ],
        keys=("benchmark", "external_id"),
        update=("domain", "subject", "text", "text_hash"),
    )
    model_id = dict(session.execute(select(LlmModel.name, LlmModel.id)).all())
    benchmarks = {q.benchmark or family.name for q in family.queries}
    query_id = {
        (b, e): i
        for i, b, e in session.execute(
            select(EvalQuery.id, EvalQuery.benchmark, EvalQuery.external_id).where(EvalQuery.benchmark.in_(benchmarks))
        )
    }
    benchmark_of = {q.query_id: q.benchmark or family.name for q in family.queries}
    upsert(
        session,
        EvalRecord.__table__,  # type: ignore[arg-type]
        [
            {
                "model_id": model_id[o.model],
                "query_id": query_id[(benchmark_of[o.query_id], o.query_id)],
                "score": o.score,
                "cost_usd": o.cost_usd,
                "output_tokens": o.output_tokens,
                "source": "import",
            }
            for o in family.outcomes
        ],
        keys=("model_id", "query_id", "source"),
        update=("score", "cost_usd", "output_tokens"),
    )
    ids = [query_id[(benchmark_of[q.query_id], q.query_id)] for q in family.queries]
    vector_journal.record(session, store, EVAL_QUERIES, ids)  # undone if the import does not commit
    store.upsert(
        EVAL_QUERIES,
        ids,
        vectors,
        [{"benchmark": benchmark_of[q.query_id], "domain": q.domain, "subject": q.subject} for q in family.queries],
    )
    added = 0
    for label, texts in _label_exemplars(family, settings.exemplars_per_label).items():
        dimension = session.scalar(select(Dimension).where(Dimension.name == label))
        if dimension is None:
            dimension = Dimension(
                kind="domain", name=label, description=f"{family.name} label '{label}'", source="import"
            )
            session.add(dimension)
            session.flush()
        added += write_exemplars(session, store, embedder, dimension, texts)
    return added


def import_data(
    session: Session,
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    path: Path,
    progress: bool = True,
) -> ImportReport:
    """Validates every family in `path` first, then imports them all or nothing (the caller commits)."""
    started = time.perf_counter()
    families = [read_family(p) for p in find_families(path)]
    reading = time.perf_counter() - started
    report = import_families(session, store, embedder, settings, families, progress)
    report.seconds_reading = reading
    return report


def import_families(
    session: Session,
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    families: list[Family],
    progress: bool = True,
) -> ImportReport:
    """Embeds (through the cache), then writes rows, vectors, exemplars and profiles in the caller's transaction."""
    report = ImportReport()
    started = time.perf_counter()
    embedded = []
    for family in families:
        texts = [q.text for q in family.queries]
        missing = embedder.count_missing(texts)
        with tqdm(total=missing, desc=f"embedding {family.name}", unit="q", disable=not progress or not missing) as bar:
            embedded.append(embedder.embed(texts, progress=bar.update))
    embedder.save()
    report.seconds_embedding = time.perf_counter() - started

    started = time.perf_counter()
    report.exemplars_added += ensure_capabilities(session, store, embedder)
    for family, vectors in zip(families, embedded, strict=True):
        report.exemplars_added += _write_family(session, store, embedder, settings, family, vectors)
        report.families.append(family.name)
        report.models += len(family.models)
        report.queries += len(family.queries)
        report.outcomes += len(family.outcomes)
        report.missing_scores += family.missing_scores
    rebuild_profiles(session, store, settings)
    report.seconds_writing = time.perf_counter() - started
    return report
