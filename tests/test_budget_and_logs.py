"""Monthly budgets refuse at the right spend; one JSON log line per request with its id; the operating metrics."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from service.api.budget import month_start, next_month_start
from service.request_log import ACCESS_LOGGER
from service.routing.decision_log import DecisionLog
from service.store.orm import RoutingDecision
from tests.operating import bearer, give_feedback, new_key

QUERY = {"query": "Who was the first emperor of Rome?", "candidates": ["dear-model"]}


def test_the_budget_refuses_once_the_months_estimated_spend_reaches_it(operating) -> None:  # type: ignore[no-untyped-def]
    client, runtime = operating
    probe = new_key(runtime, "probe", "route")
    cost = client.post("/v1/route", json=QUERY, headers=bearer(probe)).json()["alternatives"][0]["estimated_cost_usd"]
    assert cost > 0

    key = new_key(runtime, "capped", "route", monthly_budget_usd=2.5 * cost)
    # last month's spend does not count against this month
    with runtime.transaction() as session:
        session.add(
            RoutingDecision(
                id="last-month",
                created_at=month_start(datetime.now(UTC)) - timedelta(seconds=1),
                query_hash="0" * 64,
                chosen_model="dear-model",
                cost_weight=0.0,
                estimated_cost_usd=100.0,
                candidates=[],
                profile={},
                latency_ms=1.0,
                caller="capped",
                key_name="capped",
            )
        )
    for spent_before in (0, cost, 2 * cost):  # all below 2.5 x cost: answered (the third one crosses it)
        response = client.post("/v1/route", json=QUERY, headers=bearer(key))
        assert response.status_code == 200, (spent_before, response.text)
    client.app.state.decision_log.flush()  # type: ignore[attr-defined]  # stored or queued, both count
    refused = client.post("/v1/route", json=QUERY, headers=bearer(key))
    assert refused.status_code == 429
    assert "monthly budget exhausted" in refused.json()["detail"] and "'capped'" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) > 0
    batch = client.post("/v1/route/batch", json={"requests": [QUERY]}, headers=bearer(key))
    assert batch.status_code == 429
    assert client.post("/v1/route", json=QUERY, headers=bearer(probe)).status_code == 200  # other keys unaffected
    metrics = client.get("/metrics").text
    assert 'capprof_budget_refusals_total{key="capped"} 2.0' in metrics


def test_queued_decisions_count_before_they_are_written(operating) -> None:  # type: ignore[no-untyped-def]
    client, runtime = operating
    probe = new_key(runtime, "probe", "route")
    cost = client.post("/v1/route", json=QUERY, headers=bearer(probe)).json()["alternatives"][0]["estimated_cost_usd"]
    key = new_key(runtime, "tight", "route", monthly_budget_usd=cost * 0.5)
    assert client.post("/v1/route", json=QUERY, headers=bearer(key)).status_code == 200
    assert client.app.state.decision_log.pending > 0  # type: ignore[attr-defined]  # not flushed yet
    assert client.post("/v1/route", json=QUERY, headers=bearer(key)).status_code == 429


def test_month_boundaries() -> None:
    moment = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert month_start(moment) == datetime(2026, 12, 1, tzinfo=UTC)
    assert next_month_start(moment) == datetime(2027, 1, 1, tzinfo=UTC)


def test_one_json_line_per_request_with_its_id_and_no_secrets(operating, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    client, runtime = operating
    key = new_key(runtime, "logged-app", "route")
    secret_query = "What is the airspeed velocity of an unladen swallow?"
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        given = client.post(
            "/v1/route", json={"query": secret_query}, headers={**bearer(key), "X-Request-ID": "req-42.a"}
        )
        made = client.get("/v1/models", headers=bearer(key))
        refused = client.get("/v1/models", headers={**bearer("cpk_wrong"), "X-Request-ID": "bad id\n{}"})
    assert given.headers["X-Request-ID"] == "req-42.a"
    assert len(made.headers["X-Request-ID"]) == 32
    assert refused.headers["X-Request-ID"] not in ("bad id\n{}", "")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [(x["request_id"], x["status"], x["caller"]) for x in lines] == [
        ("req-42.a", 200, "logged-app"),
        (made.headers["X-Request-ID"], 403, "logged-app"),  # a route key may not read models
        (refused.headers["X-Request-ID"], 401, None),
    ]
    assert all(x["latency_ms"] >= 0 and x["path"].startswith("/v1/") for x in lines)
    logged = caplog.text
    assert key not in logged and secret_query not in logged and "cpk_wrong" not in logged


def test_operating_metrics_are_exported(operating) -> None:  # type: ignore[no-untyped-def]
    client, runtime = operating
    key = new_key(runtime, "app", "route")
    decision = client.post("/v1/route", json=QUERY, headers=bearer(key)).json()
    assert give_feedback(client, bearer(key), decision_id=decision["decision_id"], score=1).status_code == 200
    client.get("/v1/models")
    client.get("/v1/models", headers=bearer(key))
    text = client.get("/metrics").text
    for line in (
        'capprof_route_chosen_total{model="dear-model"} 1.0',
        'capprof_feedback_total{model="dear-model"} 1.0',
        'capprof_auth_failures_total{reason="missing"} 1.0',
        'capprof_auth_failures_total{reason="scope"} 1.0',
        "capprof_decisions_dropped_total 0.0",
        "capprof_decisions_pending ",
        'capprof_http_requests_total{method="POST",status="200"}',
    ):
        assert line in text, line


def test_queued_spend_counts_the_actual_cost_where_known_as_the_stored_spend_does() -> None:
    log = DecisionLog(lambda: None, flush_interval_s=None)  # type: ignore[arg-type,return-value]  # never flushed
    now = datetime.now(UTC)
    for actual, estimated in ((0.0, 1.0), (0.25, 1.0), (None, 0.5)):
        log.append({"key_name": "k", "created_at": now, "actual_cost_usd": actual, "estimated_cost_usd": estimated})
    assert log.pending_cost("k", now - timedelta(seconds=1)) == pytest.approx(0.0 + 0.25 + 0.5)  # a free answer is 0
