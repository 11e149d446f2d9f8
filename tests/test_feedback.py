"""Feedback turns a decision into an evaluation record: the profile moves at once, kNN sees it; 404/409/410; retention."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from profiling.embedding_cache import CachedEmbedder
from service.registry.retention import purge_expired
from service.runtime import Runtime
from service.store.orm import (
    DecisionDimension,
    DecisionQuery,
    EvalQuery,
    EvalRecord,
    Feedback,
    LlmModel,
    ProfileScore,
    RoutingDecision,
)
from service.store.vector_store import VectorStore
from tests.operating import bearer, give_feedback, new_key, operating_client

QUERY = "Write a Rust function that reverses a linked list in place."


@pytest.fixture
def served(
    tmp_path: Path, embedder: CachedEmbedder, session_factory: sessionmaker[Session], store: VectorStore
) -> Iterator[tuple[TestClient, Runtime, str]]:
    with operating_client(tmp_path, embedder, session_factory, store) as (client, runtime):
        yield client, runtime, new_key(runtime, "app", "route")


def _route(client: TestClient, key: str, query: str = QUERY, **options: object) -> dict:  # type: ignore[type-arg]
    response = client.post(
        "/v1/route", json={"query": query, "candidates": ["cheap-model"], **options}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _cells(runtime: Runtime, model: str) -> dict[int, tuple[float, float, int]]:
    with runtime.sessions() as session:
        model_id = session.scalar(select(LlmModel.id).where(LlmModel.name == model))
        return {
            p.dimension_id: (p.weighted_sum, p.support, p.n)
            for p in session.scalars(select(ProfileScore).where(ProfileScore.model_id == model_id))
        }


def _knn(runtime: Runtime, model: str) -> tuple[float, float]:
    """The kNN estimate and its share for `model` on QUERY, from the live routing state."""
    vector = runtime.embedder.embed_uncached([QUERY])
    est = runtime.router.estimate(vector, np.array([len(QUERY)], float))
    column = runtime.router.state.models.names.index(model)
    return float(est.p_knn[0, column]), float(est.knn_share[0, column])


def test_feedback_moves_the_profile_cells_and_the_knn_estimate(served) -> None:  # type: ignore[no-untyped-def]
    client, runtime, key = served
    decision = _route(client, key)
    client.app.state.decision_log.flush()  # type: ignore[attr-defined]
    with runtime.sessions() as session:
        weights = dict(
            session.execute(
                select(DecisionDimension.dimension_id, DecisionDimension.weight).where(
                    DecisionDimension.decision_id == decision["decision_id"]
                )
            ).all()
        )
    assert weights, "the decision's dimension weights were not kept"
    before, (knn_before, share_before) = _cells(runtime, "cheap-model"), _knn(runtime, "cheap-model")
    assert knn_before < 0.5  # the cheap model failed the coding queries near this one

    response = give_feedback(client, bearer(key), decision_id=decision["decision_id"], score=1, cost_usd=0.0002)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "cheap-model" and response.json()["overwritten"] is False

    after = _cells(runtime, "cheap-model")
    for dimension_id, weight in weights.items():
        old = before.get(dimension_id, (0.0, 0.0, 0))
        assert after[dimension_id][0] == pytest.approx(old[0] + 1.0 * weight)
        assert after[dimension_id][1] == pytest.approx(old[1] + weight)
        assert after[dimension_id][2] == old[2] + 1
    assert {d: c for d, c in after.items() if d not in weights} == {d: c for d, c in before.items() if d not in weights}

    knn_after, share_after = _knn(runtime, "cheap-model")
    assert knn_after > knn_before + 0.1  # its own outcome is the nearest neighbour now
    assert share_after > share_before

    with runtime.sessions() as session:
        record = session.scalar(
            select(EvalRecord).join(EvalQuery).where(EvalQuery.external_id == decision["decision_id"])
        )
        assert record is not None and (record.source, record.score, record.cost_usd) == ("feedback", 1.0, 0.0002)
        query = session.get(EvalQuery, record.query_id)
        assert query is not None and query.text == ""  # CAPPROF_STORE_QUERY_TEXT is off


def test_second_feedback_is_409_unless_overwritten_and_overwriting_replaces_the_value(served) -> None:  # type: ignore[no-untyped-def]
    client, runtime, key = served
    decision_id = _route(client, key)["decision_id"]
    assert give_feedback(client, bearer(key), decision_id=decision_id, score=1).status_code == 200
    once = _cells(runtime, "cheap-model")
    again = client.post("/v1/feedback", json={"decision_id": decision_id, "score": 0}, headers=bearer(key))
    assert again.status_code == 409 and "overwrite" in again.json()["detail"]
    assert _cells(runtime, "cheap-model") == once

    replaced = give_feedback(client, bearer(key), decision_id=decision_id, score=0, overwrite=True)
    assert replaced.status_code == 200 and replaced.json()["overwritten"] is True
    with runtime.sessions() as session:
        weights = dict(
            session.execute(
                select(DecisionDimension.dimension_id, DecisionDimension.weight).where(
                    DecisionDimension.decision_id == decision_id
                )
            ).all()
        )
        assert session.scalar(select(Feedback.score).where(Feedback.decision_id == decision_id)) == 0.0
    final = _cells(runtime, "cheap-model")
    for dimension_id, weight in weights.items():
        assert final[dimension_id][0] == pytest.approx(once[dimension_id][0] - weight)  # 1 -> 0
        assert final[dimension_id][1:] == pytest.approx(once[dimension_id][1:])  # same record, same support


def test_unknown_foreign_and_bad_feedback(served) -> None:  # type: ignore[no-untyped-def]
    client, runtime, key = served
    unknown = client.post("/v1/feedback", json={"decision_id": "nope", "score": 1}, headers=bearer(key))
    assert unknown.status_code == 404 and "decision_id" in unknown.json()["detail"]
    decision_id = _route(client, key)["decision_id"]
    other = new_key(runtime, "other-app", "route")
    assert (
        client.post("/v1/feedback", json={"decision_id": decision_id, "score": 1}, headers=bearer(other)).status_code
        == 404
    )
    bad = client.post("/v1/feedback", json={"decision_id": decision_id, "score": 1.5}, headers=bearer(key))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "score"


def test_decisions_past_retention_are_410_and_the_purge_removes_their_query_data(served) -> None:  # type: ignore[no-untyped-def]
    client, runtime, key = served
    fresh, stale = _route(client, key)["decision_id"], _route(client, key)["decision_id"]
    client.app.state.decision_log.flush()  # type: ignore[attr-defined]
    long_ago = datetime.now(UTC) - timedelta(days=runtime.settings.retention_days + 1)
    with runtime.transaction() as session:
        for table in (RoutingDecision, DecisionQuery, DecisionDimension):
            key_column = table.id if table is RoutingDecision else table.decision_id  # type: ignore[attr-defined]
            for row in session.scalars(select(table).where(key_column == stale)):
                row.created_at = long_ago
    gone = client.post("/v1/feedback", json={"decision_id": stale, "score": 1}, headers=bearer(key))
    assert gone.status_code == 410 and "retention" in gone.json()["detail"]

    with runtime.transaction() as session:
        result = purge_expired(session, runtime.settings.retention_days)
    assert result.queries == 1 and result.dimensions >= 1
    with runtime.sessions() as session:
        assert session.get(DecisionQuery, stale) is None and session.get(DecisionQuery, fresh) is not None
        assert session.get(RoutingDecision, stale) is not None  # the decision itself stays for the reports
    # a decision inside the window whose query data was purged anyway is gone too
    with runtime.transaction() as session:
        session.delete(session.get(DecisionQuery, fresh))
    assert client.post("/v1/feedback", json={"decision_id": fresh, "score": 1}, headers=bearer(key)).status_code == 410


@pytest.mark.parametrize("allowed", [False, True])
def test_query_text_is_kept_only_when_allowed(
    allowed: bool,
    tmp_path: Path,
    embedder: CachedEmbedder,
    session_factory: sessionmaker[Session],
    store: VectorStore,
) -> None:
    with operating_client(tmp_path, embedder, session_factory, store, store_query_text=allowed) as (client, runtime):
        key = new_key(runtime, "app", "route")
        decision_id = _route(client, key)["decision_id"]
        client.app.state.decision_log.flush()  # type: ignore[attr-defined]
        with runtime.sessions() as session:
            kept = session.get(DecisionQuery, decision_id)
            decision = session.get(RoutingDecision, decision_id)
        assert kept is not None and decision is not None
        assert kept.query_text == (QUERY if allowed else None)
        assert len(kept.vector) == 4 * runtime.embedder.dimension
        assert QUERY not in str(decision.profile) and len(decision.query_hash) == 64


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cost_usd", 1e308),  # finite, but an AVG over it would overflow the reports
        ("cost_usd", "0.1"),  # strings are not numbers
        ("output_tokens", 2**40),  # the column is 32-bit
        ("score", True),
    ],
)
def test_feedback_values_are_bounded_and_typed_like_evaluations(served, field: str, value: object) -> None:  # type: ignore[no-untyped-def]
    client, _, key = served
    decision_id = _route(client, key)["decision_id"]
    body = {"decision_id": decision_id, "score": 1, field: value}
    refused = client.post("/v1/feedback", json=body, headers=bearer(key))
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == field
    infinite = client.post(
        "/v1/feedback",
        content=f'{{"decision_id": "{decision_id}", "score": 1, "cost_usd": Infinity}}',
        headers=bearer(key) | {"content-type": "application/json"},
    )
    assert infinite.status_code == 422


def test_feedback_credits_the_model_that_served_after_a_fallback(served) -> None:  # type: ignore[no-untyped-def]
    client, runtime, key = served
    decision_id = _route(client, key)["decision_id"]  # chose cheap-model (the only candidate)
    client.app.state.decision_log.flush()  # type: ignore[attr-defined]
    with runtime.sessions() as session, session.begin():
        decision = session.get(RoutingDecision, decision_id)
        assert decision is not None and decision.chosen_model == "cheap-model"
        decision.served_model, decision.fallbacks = "dear-model", 1  # what the gateway writes after a fallback
    given = give_feedback(client, bearer(key), decision_id=decision_id, score=0)
    assert given.status_code == 200 and given.json()["model"] == "dear-model"
    with runtime.sessions() as session:
        credited = session.scalars(
            select(LlmModel.name)
            .join(EvalRecord, EvalRecord.model_id == LlmModel.id)
            .join(EvalQuery, EvalQuery.id == EvalRecord.query_id)
            .where(EvalQuery.external_id == decision_id)
        ).all()
    assert credited == ["dear-model"]
