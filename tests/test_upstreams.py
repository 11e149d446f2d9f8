"""Upstreams on models: through the model API and through `capprof import` (models.csv columns), gold answers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from profiling.dataset import DatasetError
from profiling.embedding_cache import CachedEmbedder
from service.registry.importer import import_data
from service.settings import Settings
from service.store.orm import EvalQuery, LlmModel
from service.store.vector_store import VectorStore
from tests.conftest import ADMIN, csv_rows, shared_family, small_family

UPSTREAM = {"endpoint_url": "https://llm.example.com/v1", "upstream_model": "org/model-7b", "api_key_env": "ACME_KEY"}


def test_the_model_api_takes_and_returns_upstreams(client: TestClient) -> None:
    created = client.post("/v1/models", json={"name": "acme", **UPSTREAM}, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert {k: created.json()[k] for k in UPSTREAM} == UPSTREAM
    patched = client.patch("/v1/models/acme", json={"upstream_model": "org/model-8b"}, headers=ADMIN)
    assert patched.json()["upstream_model"] == "org/model-8b"
    assert patched.json()["endpoint_url"] == UPSTREAM["endpoint_url"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("endpoint_url", "ftp://x.example"),
        ("endpoint_url", "not a url"),
        ("api_key_env", "sk-live-12345"),
        ("api_key_env", "CAPPROF_ADMIN_KEY"),  # would send the admin key to the caller's endpoint
        ("api_key_env", "capprof_key_secret"),
        ("upstream_model", "a\u0000b"),
    ],
)
def test_bad_upstream_fields_are_422_naming_the_field(client: TestClient, field: str, value: str) -> None:
    response = client.post("/v1/models", json={"name": "acme", **UPSTREAM, field: value}, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


def _with_upstreams(family: Path, rows: dict[str, dict[str, str]]) -> None:
    models = csv_rows(family / "models.csv")
    with open(family / "models.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*models[0], *UPSTREAM])
        writer.writeheader()
        writer.writerows({**m, **rows.get(m["model"], {})} for m in models)


def test_import_reads_upstream_columns_and_gold_answers(
    db: Session, store: VectorStore, embedder: CachedEmbedder, settings: Settings, tmp_path: Path
) -> None:
    family = small_family(tmp_path, shared_family("zeroeval"), 20)
    first = csv_rows(family / "models.csv")[0]["model"]
    _with_upstreams(family, {first: UPSTREAM})
    with db.begin():
        import_data(db, store, embedder, settings, family, progress=False)
    model = db.scalar(select(LlmModel).where(LlmModel.name == first))
    assert model is not None
    assert (model.endpoint_url, model.upstream_model, model.api_key_env) == tuple(UPSTREAM.values())
    gold = {q["query_id"]: q["answer"] for q in csv_rows(family / "queries.csv.gz")}
    stored = dict(db.execute(select(EvalQuery.external_id, EvalQuery.answer)).all())
    assert stored == gold


def test_import_refuses_a_key_where_the_env_var_name_belongs(
    db: Session, store: VectorStore, embedder: CachedEmbedder, settings: Settings, tmp_path: Path
) -> None:
    family = small_family(tmp_path, shared_family("zeroeval"), 20)
    first = csv_rows(family / "models.csv")[0]["model"]
    _with_upstreams(family, {first: {**UPSTREAM, "api_key_env": "sk-proj-abc123"}})
    with pytest.raises(DatasetError) as refused, db.begin():
        import_data(db, store, embedder, settings, family, progress=False)
    assert refused.value.column == "api_key_env" and "sk-proj-abc123" not in str(refused.value)
