"""`capprof import` on real shared data: counts, idempotency, and refusal of bad files."""

import csv
import gzip
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from profiling.dataset import DatasetError
from profiling.embedding_cache import CachedEmbedder
from profiling.labels import readable_label
from service.registry.importer import import_data
from service.settings import Settings
from service.store.orm import Dimension, EvalQuery, EvalRecord, Exemplar, LlmModel, ProfileScore
from service.store.vector_store import EVAL_QUERIES, VectorStore
from tests.conftest import csv_rows, shared_family, small_family


def _counts(session: Session) -> dict[str, int]:
    return {
        table.__tablename__: session.scalar(select(func.count()).select_from(table)) or 0
        for table in (LlmModel, EvalQuery, EvalRecord, Dimension, Exemplar, ProfileScore)
    }


def _import(
    sessions: sessionmaker[Session], store: VectorStore, embedder: CachedEmbedder, settings: Settings, path: Path
):  # type: ignore[no-untyped-def]
    with sessions() as session, session.begin():
        return import_data(session, store, embedder, settings, path, progress=False)


def test_import_real_family_matches_the_files_and_is_idempotent(
    session_factory: sessionmaker[Session], store: VectorStore, embedder: CachedEmbedder, settings: Settings
) -> None:
    family = shared_family("zeroeval")
    models = csv_rows(family / "models.csv")
    queries = csv_rows(family / "queries.csv.gz")
    outcomes = [o for o in csv_rows(family / "outcomes.csv.gz") if o["score"] != ""]

    report = _import(session_factory, store, embedder, settings, family)
    assert (report.models, report.queries, report.outcomes) == (len(models), len(queries), len(outcomes))
    with session_factory() as session:
        first = _counts(session)
        assert first["models"] == len(models)
        assert first["eval_queries"] == len(queries)
        assert first["eval_records"] == len(outcomes)
        labels = {q["domain"] for q in queries} | {q["subject"] for q in queries}
        domains = dict(
            session.execute(select(Dimension.name, Dimension.description).where(Dimension.kind == "domain")).all()
        )
        assert {readable_label(label) for label in labels} <= set(domains)  # readable names, not benchmark labels
        assert "grade school math word problems" in domains and "gsm" not in domains
        assert "'gsm'" in domains["grade school math word problems"]  # the source label is kept in the description
        providers = dict(session.execute(select(LlmModel.name, LlmModel.provider)).all())
        assert {m["model"]: m["provider"] or None for m in models} == providers
        assert session.scalar(select(func.count()).where(Dimension.kind == "capability")) == 7
        assert first["profile_scores"] > 0
        one = outcomes[0]
        stored = session.scalar(
            select(EvalRecord.score)
            .join(LlmModel)
            .join(EvalQuery)
            .where(LlmModel.name == one["model"], EvalQuery.external_id == one["query_id"])
        )
        assert stored == float(one["score"])
    assert store.count(EVAL_QUERIES) == len(queries)

    _import(session_factory, store, embedder, settings, family)
    with session_factory() as session:
        assert _counts(session) == first
    assert store.count(EVAL_QUERIES) == len(queries)


def test_blank_scores_are_skipped_and_counted(
    session_factory: sessionmaker[Session],
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    tmp_path: Path,
) -> None:
    family = small_family(tmp_path, shared_family("zeroeval"), 5)
    rows = csv_rows(family / "outcomes.csv.gz")
    rows[3]["score"] = ""
    _write(family / "outcomes.csv.gz", rows)
    report = _import(session_factory, store, embedder, settings, family)
    assert report.missing_scores == 1
    assert report.outcomes == len(rows) - 1


def _write(path: Path, rows: list[dict[str, str]], fieldnames: list[str] | None = None) -> None:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames or list(rows[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _drop_column(family: Path) -> str:
    rows = csv_rows(family / "outcomes.csv.gz")
    _write(family / "outcomes.csv.gz", rows, [c for c in rows[0] if c != "cost_usd"])
    return "outcomes.csv.gz, line 1, column 'cost_usd': missing column"


def _unknown_model(family: Path) -> str:
    rows = csv_rows(family / "outcomes.csv.gz")
    rows[4]["model"] = "no-such-model"
    _write(family / "outcomes.csv.gz", rows)
    return "outcomes.csv.gz, line 6, column 'model': unknown model 'no-such-model'"


def _bad_score(family: Path) -> str:
    rows = csv_rows(family / "outcomes.csv.gz")
    rows[2]["score"] = "correct"
    _write(family / "outcomes.csv.gz", rows)
    return "outcomes.csv.gz, line 4, column 'score': not a number: 'correct'"


def _empty_file(family: Path) -> str:
    (family / "models.csv").write_text("")
    return "models.csv, line 1: empty file"


@pytest.mark.parametrize("corrupt", [_drop_column, _unknown_model, _bad_score, _empty_file])
def test_bad_file_names_the_place_and_leaves_the_database_unchanged(
    corrupt,  # type: ignore[no-untyped-def]
    session_factory: sessionmaker[Session],
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    tmp_path: Path,
) -> None:
    good = small_family(tmp_path / "good", shared_family("zeroeval"), 20)
    _import(session_factory, store, embedder, settings, good)
    with session_factory() as session:
        before = _counts(session)
    points_before = store.count(EVAL_QUERIES)

    bad = small_family(tmp_path / "bad", shared_family("mmlu_pro"), 20)
    expected = corrupt(bad)
    with pytest.raises(DatasetError) as error:
        _import(session_factory, store, embedder, settings, bad)
    assert expected in str(error.value)
    assert str(bad) in str(error.value)
    with session_factory() as session:
        assert _counts(session) == before
    assert store.count(EVAL_QUERIES) == points_before


def test_a_folder_without_family_files_is_refused(
    session_factory: sessionmaker[Session],
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    tmp_path: Path,
) -> None:
    with pytest.raises(DatasetError, match="no family folder here"):
        _import(session_factory, store, embedder, settings, tmp_path)
