"""`capprof import`: a data folder in the shared format into Postgres and Qdrant, in one transaction."""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from profiling.dataset import FILES, Family, find_families, read_family
from profiling.embedder import Vectors, text_hash
from profiling.embedding_cache import CachedEmbedder
from profiling.labels import readable_label
from service.registry.catalog import ensure_seed_dimensions, write_exemplars
from service.registry.profiles import rebuild_profiles
from service.settings import Settings
from service.store import vector_journal
from service.store.generation import FULL, bump_generation
from service.store.orm import DataImport, Dimension, EvalQuery, EvalRecord, LlmModel, ModelImportValues
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
    kept_api_values: list[str] = field(default_factory=list)
    seconds_reading: float = 0.0
    seconds_embedding: float = 0.0
    seconds_writing: float = 0.0


UPSTREAM_COLUMNS = ("endpoint_url", "upstream_model", "api_key_env")


def _exemplar_order(query_id: str) -> str:
    """A fixed pseudo-random order, so the same exemplars are chosen on every import."""
    return hashlib.sha256(query_id.encode()).hexdigest()


def _label_exemplars(family: Family, per_label: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Up to `per_label` query texts for each domain and subject, by readable name (labels that read the same,
    like `physics` and `stemez-Physics`, are one domain), and the source labels behind each name."""
    by_name: dict[str, list[tuple[str, str]]] = defaultdict(list)
    sources: dict[str, set[str]] = defaultdict(set)
    for q in family.queries:
        names = {readable_label(label): label for label in sorted({q.domain, q.subject} - {""})}
        for name in sorted(names):  # sorted: set order varies between processes
            by_name[name].append((_exemplar_order(q.query_id), q.text))
            sources[name].add(names[name])
    exemplars = {name: [t for _, t in sorted(items)[:per_label]] for name, items in by_name.items()}
    return exemplars, {name: sorted(labels) for name, labels in sources.items()}


def _domain(session: Session, family: Family, name: str, labels: list[str]) -> Dimension:
    """The domain dimension for a readable name; one imported earlier under a raw label is renamed, not doubled."""
    dimension = session.scalar(select(Dimension).where(Dimension.name == name))
    if dimension is None:
        dimension = session.scalar(
            select(Dimension).where(
                Dimension.name.in_(labels), Dimension.source == "import", Dimension.kind == "domain"
            )
        )
        if dimension is not None:
            dimension.name = name
    if dimension is None:
        dimension = Dimension(kind="domain", name=name, source="import", description="")
        session.add(dimension)
    if dimension.source == "import":  # a seeded domain keeps its own description
        quoted = ", ".join(f"'{label}'" for label in labels)
        dimension.description = f"{family.name} labels {quoted}"
    session.flush()
    return dimension


IMPORTED_FIELDS = ("input_usd_per_mtok", "output_usd_per_mtok", "price_basis", "provider")


def _model_rows(
    session: Session, family: Family, overwrite: bool, kept: list[str], fields: Sequence[str] = IMPORTED_FIELDS
) -> list[dict[str, object]]:
    """The file's models; a field changed through the API since the last import keeps its value unless `overwrite`.

    "Changed" means its current value differs from what the last import wrote (model_import_values); a model the
    API registered before any import keeps all its values. Status is never written by an import.
    """
    names = [m.name for m in family.models]
    current = {m.name: m for m in session.scalars(select(LlmModel).where(LlmModel.name.in_(names)))}
    previous: dict[int, dict[str, object]] = dict(
        session.execute(
            select(ModelImportValues.model_id, ModelImportValues.import_values).where(
                ModelImportValues.model_id.in_([m.id for m in current.values()])
            )
        ).all()
    )
    rows: list[dict[str, object]] = []
    for m in family.models:
        values: dict[str, object] = {f: getattr(m, f) for f in fields}
        existing = current.get(m.name)
        if existing is not None and not overwrite:
            last = previous.get(existing.id)
            for f in fields:
                now = getattr(existing, f)
                if last is None or f not in last or last[f] != now:
                    if now != values[f]:
                        kept.append(f"{m.name}.{f}")
                    values[f] = now
        rows.append({"name": m.name, "status": "active", **values})
    return rows


def _remember_import(session: Session, family: Family, fields: Sequence[str] = IMPORTED_FIELDS) -> None:
    ids = dict(
        session.execute(
            select(LlmModel.name, LlmModel.id).where(LlmModel.name.in_([m.name for m in family.models]))
        ).all()
    )
    upsert(
        session,
        ModelImportValues.__table__,  # type: ignore[arg-type]
        [{"model_id": ids[m.name], "import_values": {f: getattr(m, f) for f in fields}} for m in family.models],
        keys=("model_id",),
        update=("import_values",),
    )


def data_fingerprint(family_paths: list[Path]) -> str:
    """sha256 over every family's files: the same files give the same fingerprint wherever they lie."""
    digest = hashlib.sha256()
    for family_path in sorted(family_paths, key=lambda p: p.name):
        for name in FILES:
            digest.update(f"{family_path.name}/{name}\n".encode())
            digest.update(hashlib.sha256((family_path / name).read_bytes()).digest())
    return digest.hexdigest()


def already_imported(session: Session, path: Path) -> DataImport | None:
    """The earlier import of exactly these files, if any (cheap: hashes the files, embeds nothing)."""
    return session.get(DataImport, data_fingerprint(find_families(path)))


def _write_family(
    session: Session,
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    family: Family,
    vectors: Vectors,
    overwrite: bool = False,
    kept: list[str] | None = None,
) -> int:
    """Models, queries, outcomes, query points and label exemplars of one family."""
    # Upstream columns are written only when the family's models.csv gives some: a plain re-import keeps
    # upstreams registered through the API.
    upstream = UPSTREAM_COLUMNS if any(m.endpoint_url for m in family.models) else ()
    upsert(
        session,
        LlmModel.__table__,  # type: ignore[arg-type]
        _model_rows(session, family, overwrite, kept if kept is not None else [], (*IMPORTED_FIELDS, *upstream)),
        keys=("name",),
        update=(*IMPORTED_FIELDS, *upstream),
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
                "answer": q.answer,
            }
            for q in family.queries
        ],
        keys=("benchmark", "external_id"),
        update=("domain", "subject", "text", "text_hash", "answer"),
    )
    _remember_import(session, family, (*IMPORTED_FIELDS, *upstream))
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
    exemplars, labels = _label_exemplars(family, settings.exemplars_per_label)
    for name, texts in exemplars.items():
        dimension = _domain(session, family, name, labels[name])
        added += write_exemplars(session, store, embedder, dimension, texts)
    return added


def import_data(
    session: Session,
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    path: Path,
    progress: bool = True,
    overwrite: bool = False,
) -> ImportReport:
    """Validates every family in `path` first, then imports them all or nothing (the caller commits).

    Values changed through the API since the last import are kept unless `overwrite` (see _model_rows).
    """
    started = time.perf_counter()
    families = [read_family(p) for p in find_families(path)]
    reading = time.perf_counter() - started
    report = import_families(session, store, embedder, settings, families, progress, overwrite)
    report.seconds_reading = reading
    fingerprint = data_fingerprint([f.path for f in families])
    if session.get(DataImport, fingerprint) is None:
        session.add(DataImport(fingerprint=fingerprint, path=str(path.resolve())[:1000], families=report.families))
    return report


def import_families(
    session: Session,
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    families: list[Family],
    progress: bool = True,
    overwrite: bool = False,
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
    report.exemplars_added += ensure_seed_dimensions(session, store, embedder)
    for family, vectors in zip(families, embedded, strict=True):
        report.exemplars_added += _write_family(
            session, store, embedder, settings, family, vectors, overwrite, report.kept_api_values
        )
        report.families.append(family.name)
        report.models += len(family.models)
        report.queries += len(family.queries)
        report.outcomes += len(family.outcomes)
        report.missing_scores += family.missing_scores
    rebuild_profiles(session, store, settings)
    bump_generation(session, FULL)
    report.seconds_writing = time.perf_counter() - started
    return report
