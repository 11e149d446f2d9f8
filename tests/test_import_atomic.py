"""All-or-nothing imports across both stores, and file checks that catch what the database would refuse (issue 10)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from profiling.dataset import DatasetError
from profiling.embedding_cache import CachedEmbedder
from service.registry import importer
from service.registry.catalog import write_exemplars
from service.registry.importer import import_data
from service.settings import Settings
from service.store.orm import Dimension, EvalQuery, Exemplar
from service.store.vector_store import COLLECTIONS, EXEMPLARS, VectorStore
from tests.conftest import csv_rows, shared_family, small_family
from tests.test_import import _write


def _points(store: VectorStore) -> dict[str, dict[int, tuple[list[float], dict[str, Any]]]]:
    out = {}
    for collection in COLLECTIONS:
        index, payloads = store.snapshot(collection)
        out[collection] = {
            int(i): (index.vectors[row].round(5).tolist(), payloads[int(i)]) for row, i in enumerate(index.ids)
        }
    return out


def _import(
    sessions: sessionmaker[Session], store: VectorStore, embedder: CachedEmbedder, settings: Settings, path: Path
):  # type: ignore[no-untyped-def]
    with sessions() as session, session.begin():
        return import_data(session, store, embedder, settings, path, progress=False)


def test_no_vector_point_outlives_a_failed_import(
    session_factory: sessionmaker[Session],
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = small_family(tmp_path / "first", shared_family("zeroeval"), 20)
    _import(session_factory, store, embedder, settings, good)
    before = _points(store)
    assert before["eval_queries"] and before["exemplars"]
    with session_factory() as session:
        rows_before = (
            session.scalar(select(func.count()).select_from(EvalQuery)),
            session.scalar(select(func.count()).select_from(Exemplar)),
        )

    # A second import of the same family (points overwritten) plus a new one (points added) fails after every
    # vector is written, as the AVG overflow did: nothing may be left of it in either store.
    both = tmp_path / "both"
    shutil.copytree(good, both / "zeroeval")
    small_family(both, shared_family("mmlu_pro"), 20)
    monkeypatch.setattr(importer, "rebuild_profiles", _boom)
    with pytest.raises(RuntimeError, match="database refused"):
        _import(session_factory, store, embedder, settings, both)

    after = _points(store)
    assert set(after["eval_queries"]) == set(before["eval_queries"])
    assert set(after["exemplars"]) == set(before["exemplars"])
    for collection in COLLECTIONS:
        for point_id, (vector, payload) in before[collection].items():
            np.testing.assert_allclose(after[collection][point_id][0], vector, atol=1e-4)
            assert after[collection][point_id][1] == payload
    with session_factory() as session:
        rows_after = (
            session.scalar(select(func.count()).select_from(EvalQuery)),
            session.scalar(select(func.count()).select_from(Exemplar)),
        )
    assert rows_after == rows_before


def _boom(*_: object, **__: object) -> None:
    raise RuntimeError("database refused the write")


def test_a_failed_first_import_leaves_qdrant_empty(
    session_factory: sessionmaker[Session],
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    family = small_family(tmp_path, shared_family("zeroeval"), 10)
    monkeypatch.setattr(importer, "rebuild_profiles", _boom)
    with pytest.raises(RuntimeError):
        _import(session_factory, store, embedder, settings, family)
    assert {c: store.count(c) for c in COLLECTIONS} == dict.fromkeys(COLLECTIONS, 0)


def test_exemplars_of_a_rolled_back_transaction_are_removed_and_committed_ones_kept(
    session_factory: sessionmaker[Session], store: VectorStore, embedder: CachedEmbedder
) -> None:
    with session_factory() as session, session.begin():
        kept = Dimension(kind="domain", name="kept domain", description="", source="api")
        session.add(kept)
        session.flush()
        write_exemplars(session, store, embedder, kept, ["What is a tort?"])
    with pytest.raises(RuntimeError), session_factory() as session, session.begin():
        dropped = Dimension(kind="domain", name="dropped domain", description="", source="api")
        session.add(dropped)
        session.flush()
        write_exemplars(session, store, embedder, dropped, ["What is salvage at sea?", "Define general average."])
        assert store.count(EXEMPLARS) == 3
        raise RuntimeError("request failed after the vectors were written")
    assert store.count(EXEMPLARS) == 1
    with session_factory() as session:  # a session closed without commit also undoes its points
        other = Dimension(kind="domain", name="never committed", description="", source="api")
        session.add(other)
        session.flush()
        write_exemplars(session, store, embedder, other, ["An uncommitted exemplar"])
    assert store.count(EXEMPLARS) == 1


def _single_line_family(tmp: Path) -> Path:
    family = small_family(tmp, shared_family("mmlu_pro"), 20)
    rows = csv_rows(family / "queries.csv.gz")
    for i, row in enumerate(rows):
        row["text"] = f"MARK{i:02d} " + " ".join(row["text"].split())
    _write(family / "queries.csv.gz", rows)
    return family


def _set_outcome(column: str, value: str):  # type: ignore[no-untyped-def]
    def corrupt(family: Path) -> str:
        rows = csv_rows(family / "outcomes.csv.gz")
        rows[6][column] = value
        _write(family / "outcomes.csv.gz", rows)
        return f"outcomes.csv.gz, line 8, column '{column}': must be at most"

    return corrupt


def _invalid_utf8(family: Path) -> str:
    raw = gzip.decompress((family / "queries.csv.gz").read_bytes())
    (family / "queries.csv.gz").write_bytes(gzip.compress(raw.replace(b"MARK15 ", b"MARK15 \xff\xfe ")))
    return "queries.csv.gz, line 17, column 'text': not valid UTF-8: byte 0xff at character 8"


def _nul_character(family: Path) -> str:
    rows = csv_rows(family / "queries.csv.gz")
    rows[9]["subject"] = "law\x00"
    _write(family / "queries.csv.gz", rows)
    return "queries.csv.gz, line 11, column 'subject': NUL character at character 4"


def _long_model_name(family: Path) -> str:
    text = (family / "models.csv").read_text()
    first = text.splitlines()[1].split(",")[0]
    (family / "models.csv").write_text(text.replace(first, "m" * 201, 1))
    rows = csv_rows(family / "outcomes.csv.gz")
    for row in rows:
        if row["model"] == first:
            row["model"] = "m" * 201
    _write(family / "outcomes.csv.gz", rows)
    return "models.csv, line 2, column 'model': longer than 200 characters"


@pytest.mark.parametrize(
    "corrupt",
    [
        _set_outcome("output_tokens", "99999999999"),
        _set_outcome("cost_usd", "1e308"),
        _invalid_utf8,
        _nul_character,
        _long_model_name,
    ],
    ids=["output_tokens_beyond_integer", "absurd_cost", "invalid_utf8", "nul", "long_model_name"],
)
def test_values_the_database_would_refuse_are_named_by_file_line_and_column(
    corrupt,  # type: ignore[no-untyped-def]
    session_factory: sessionmaker[Session],
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    tmp_path: Path,
) -> None:
    family = _single_line_family(tmp_path)
    expected = corrupt(family)
    with pytest.raises(DatasetError) as error:
        _import(session_factory, store, embedder, settings, family)
    assert expected in str(error.value)
    assert {c: store.count(c) for c in COLLECTIONS} == dict.fromkeys(COLLECTIONS, 0)
