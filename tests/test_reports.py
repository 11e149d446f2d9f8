"""Admin reports: every view's figures on a hand-built set of decisions and feedback, computed by hand here.

Five decisions (D1-D5), three with feedback (F1, F2, F4), three dimensions, two models:

    id  time (UTC)        caller  model    est. cost  P(correct)  most exp.  best avg  latency  dimensions
    D1  2026-01-05 10:15  alice   m-cheap  0.001      0.6         0.010      0.004     10       reasoning .6, history 1
    D2  2026-01-05 10:45  alice   m-dear   0.008      0.9         0.010      0.004     20       reasoning 1, history 1
    D3  2026-01-05 10:50  bob     m-cheap  0.002      0.7         0.012      0.005     30       coding 1
    D4  2026-01-05 10:55  alice   m-cheap  0.001      0.5         0.010      0.004     40       reasoning .4, coding .6
    D5  2026-01-06 09:00  alice   m-cheap  0.003      0.8         0.020      0.006     100      coding 1

    F1 on D1: score 1, cost 0.0015;  F2 on D2: score 0, no cost;  F4 on D4: score 0, cost 0.0025
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from service.cli import app as cli
from service.runtime import downgrade_database, upgrade_database
from service.store.db import make_engine, make_session_factory
from service.store.orm import (
    DecisionDimension,
    Dimension,
    EvalQuery,
    EvalQueryDimension,
    Feedback,
    LlmModel,
    ProfileScore,
    RoutingDecision,
)
from service.store.reports import REPORT_VIEWS, ReportError, ReportFilters, grant_reporting, run_report
from tests.conftest import ADMIN, BACKEND, POSTGRES_ADMIN_URL, ThrowawayDatabases

DECISIONS = [
    ("D1", datetime(2026, 1, 5, 10, 15), "alice", "m-cheap", 0.001, 0.6, 0.010, 0.004, 10.0),
    ("D2", datetime(2026, 1, 5, 10, 45), "alice", "m-dear", 0.008, 0.9, 0.010, 0.004, 20.0),
    ("D3", datetime(2026, 1, 5, 10, 50), "bob", "m-cheap", 0.002, 0.7, 0.012, 0.005, 30.0),
    ("D4", datetime(2026, 1, 5, 10, 55), "alice", "m-cheap", 0.001, 0.5, 0.010, 0.004, 40.0),
    ("D5", datetime(2026, 1, 6, 9, 0), "alice", "m-cheap", 0.003, 0.8, 0.020, 0.006, 100.0),
]
WEIGHTS = {
    "D1": {"reasoning-x": 0.6, "history-x": 1.0},
    "D2": {"reasoning-x": 1.0, "history-x": 1.0},
    "D3": {"coding-x": 1.0},
    "D4": {"reasoning-x": 0.4, "coding-x": 0.6},
    "D5": {"coding-x": 1.0},
}
FEEDBACK = {"D1": (1.0, 0.0015), "D2": (0.0, None), "D4": (0.0, 0.0025)}


def build(session: Session) -> None:
    """The hand-built set above, written the way the service writes it."""
    dims = {
        name: Dimension(kind=kind, name=name, description="", source="api")
        for name, kind in (("reasoning-x", "capability"), ("coding-x", "capability"), ("history-x", "domain"))
    }
    models = {name: LlmModel(name=name, status="active") for name in ("m-cheap", "m-dear")}
    session.add_all([*dims.values(), *models.values()])
    session.flush()
    for did, moment, caller, model, cost, p, most, best, latency in DECISIONS:
        created = moment.replace(tzinfo=UTC)
        session.add(
            RoutingDecision(
                id=did,
                created_at=created,
                query_hash="0" * 64,
                chosen_model=model,
                cost_weight=0.0,
                estimated_cost_usd=cost,
                estimated_p_correct=p,
                candidates=[],
                profile={},
                latency_ms=latency,
                caller=caller,
                key_name=caller,
                baseline_max_cost_usd=most,
                baseline_best_model="m-dear",
                baseline_best_cost_usd=best,
            )
        )
        session.add_all(
            DecisionDimension(decision_id=did, dimension_id=dims[n].id, weight=w, created_at=created)
            for n, w in WEIGHTS[did].items()
        )
    session.flush()
    for did, (score, cost) in FEEDBACK.items():
        query = EvalQuery(benchmark="feedback", external_id=did, text="", text_hash="0" * 64)
        session.add(query)
        session.flush()
        session.add_all(
            EvalQueryDimension(query_id=query.id, dimension_id=dims[n].id, weight=w) for n, w in WEIGHTS[did].items()
        )
        model = next(d[3] for d in DECISIONS if d[0] == did)
        now = datetime(2026, 1, 7, tzinfo=UTC)
        session.add(
            Feedback(
                decision_id=did,
                created_at=now,
                updated_at=now,
                model=model,
                caller="alice",
                score=score,
                cost_usd=cost,
                eval_query_id=query.id,
                query_vector=b"\0\0\0\0",
            )
        )
    for model, dim, weighted_sum, support, n in (
        ("m-cheap", "reasoning-x", 3.0, 4.0, 5),
        ("m-dear", "reasoning-x", 1.8, 2.0, 2),
        ("m-dear", "history-x", 0.0, 0.0, 0),
    ):
        session.add(
            ProfileScore(
                model_id=models[model].id, dimension_id=dims[dim].id, weighted_sum=weighted_sum, support=support, n=n
            )
        )
    session.flush()


def rows(session: Session | Any, name: str, **filters: Any) -> list[dict[str, Any]]:
    return run_report(session, name, ReportFilters(**filters))[1]


def same(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Rows equal column by column (floats to 1e-9), restricted to the columns the expectation names."""
    assert len(actual) == len(expected), actual
    for got, want in zip(actual, expected, strict=True):
        for column, value in want.items():
            if isinstance(value, float):
                assert got[column] == pytest.approx(value, abs=1e-9), (column, got)
            else:
                assert got[column] == value, (column, got)


@pytest.fixture
def data(db: Session) -> Session:
    build(db)
    db.commit()
    return db


def test_routing_volume(data: Session) -> None:
    same(
        rows(data, "routing_volume"),
        [
            {"hour": "2026-01-05T10:00:00", "day": "2026-01-05", "caller": "alice", "model": "m-cheap",
             "decisions": 2, "estimated_cost_usd": 0.002, "mean_latency_ms": 25.0},
            {"hour": "2026-01-05T10:00:00", "caller": "alice", "model": "m-dear", "decisions": 1,
             "estimated_cost_usd": 0.008, "mean_latency_ms": 20.0},
            {"hour": "2026-01-05T10:00:00", "caller": "bob", "model": "m-cheap", "decisions": 1,
             "estimated_cost_usd": 0.002, "mean_latency_ms": 30.0},
            {"hour": "2026-01-06T09:00:00", "day": "2026-01-06", "caller": "alice", "model": "m-cheap",
             "decisions": 1, "estimated_cost_usd": 0.003, "mean_latency_ms": 100.0},
        ],
    )  # fmt: skip


def test_cost_savings(data: Session) -> None:
    same(
        rows(data, "cost_savings"),
        [
            # D1 + D4: actual 0.0015 + 0.0025 = 0.004 vs 0.010 + 0.010 (most expensive) and 0.004 + 0.004 (best)
            {"day": "2026-01-05", "caller": "alice", "model": "m-cheap", "decisions": 2, "estimated_cost_usd": 0.002,
             "decisions_with_actual_cost": 2, "actual_cost_usd": 0.004, "routed_cost_usd": 0.004,
             "most_expensive_cost_usd": 0.020, "best_model_cost_usd": 0.008,
             "savings_vs_most_expensive_usd": 0.016, "savings_vs_most_expensive_pct": 80.0,
             "savings_vs_best_model_usd": 0.004, "savings_vs_best_model_pct": 50.0},
            # D2: no actual cost, so the estimate counts; routing to the dear model cost more than the best model
            {"day": "2026-01-05", "caller": "alice", "model": "m-dear", "decisions": 1, "estimated_cost_usd": 0.008,
             "decisions_with_actual_cost": 0, "actual_cost_usd": None, "routed_cost_usd": 0.008,
             "savings_vs_most_expensive_usd": 0.002, "savings_vs_most_expensive_pct": 20.0,
             "savings_vs_best_model_usd": -0.004, "savings_vs_best_model_pct": -100.0},
            {"day": "2026-01-05", "caller": "bob", "model": "m-cheap", "routed_cost_usd": 0.002,
             "savings_vs_most_expensive_usd": 0.010, "savings_vs_most_expensive_pct": 100 * 0.010 / 0.012,
             "savings_vs_best_model_usd": 0.003, "savings_vs_best_model_pct": 60.0},
            {"day": "2026-01-06", "caller": "alice", "model": "m-cheap", "routed_cost_usd": 0.003,
             "savings_vs_most_expensive_usd": 0.017, "savings_vs_most_expensive_pct": 85.0,
             "savings_vs_best_model_usd": 0.003, "savings_vs_best_model_pct": 50.0},
        ],
    )  # fmt: skip


def test_traffic_mix(data: Session) -> None:
    same(
        rows(data, "traffic_mix"),
        [
            # alice on Jan 5 (D1, D2, D4): capability weight 0.6 + 1 + 0.4 reasoning, 0.6 coding; history in D1, D2
            {"day": "2026-01-05", "caller": "alice", "kind": "capability", "dimension": "coding-x", "decisions": 1,
             "weight": 0.6, "share": 0.6 / 2.6},
            {"day": "2026-01-05", "caller": "alice", "kind": "capability", "dimension": "reasoning-x",
             "decisions": 3, "weight": 2.0, "share": 2.0 / 2.6},
            {"day": "2026-01-05", "caller": "alice", "kind": "domain", "dimension": "history-x", "decisions": 2,
             "weight": 2.0, "share": 1.0},
            {"day": "2026-01-05", "caller": "bob", "kind": "capability", "dimension": "coding-x", "decisions": 1,
             "weight": 1.0, "share": 1.0},
            {"day": "2026-01-06", "caller": "alice", "kind": "capability", "dimension": "coding-x", "decisions": 1,
             "weight": 1.0, "share": 1.0},
        ],
    )  # fmt: skip


def test_model_quality(data: Session) -> None:
    same(
        rows(data, "model_quality"),
        [
            # m-cheap: F1 (D1, right, predicted .6) and F4 (D4, wrong, predicted .5)
            {"day": "2026-01-05", "caller": "alice", "model": "m-cheap", "kind": "capability",
             "dimension": "coding-x", "feedback": 1, "support": 0.6, "observed_accuracy": 0.0,
             "predicted_p_correct": 0.5, "calibration_gap": -0.5},
            {"day": "2026-01-05", "caller": "alice", "model": "m-cheap", "kind": "capability",
             "dimension": "reasoning-x", "feedback": 2, "support": 1.0, "observed_accuracy": 0.6,
             "predicted_p_correct": 0.6 * 0.6 + 0.4 * 0.5, "calibration_gap": 0.6 - 0.56},
            {"day": "2026-01-05", "caller": "alice", "model": "m-cheap", "kind": "domain", "dimension": "history-x",
             "feedback": 1, "support": 1.0, "observed_accuracy": 1.0, "predicted_p_correct": 0.6,
             "calibration_gap": 0.4},
            # m-dear: F2 (D2, wrong, predicted .9)
            {"model": "m-dear", "kind": "capability", "dimension": "reasoning-x", "feedback": 1,
             "observed_accuracy": 0.0, "predicted_p_correct": 0.9, "calibration_gap": -0.9},
            {"model": "m-dear", "kind": "domain", "dimension": "history-x", "feedback": 1,
             "observed_accuracy": 0.0, "predicted_p_correct": 0.9, "calibration_gap": -0.9},
        ],
    )  # fmt: skip


def test_profile_matrix(data: Session) -> None:
    same(
        rows(data, "profile_matrix"),
        [
            {"model": "m-cheap", "kind": "capability", "dimension": "reasoning-x", "score": 0.75, "support": 4.0,
             "records": 5},
            {"model": "m-dear", "kind": "capability", "dimension": "reasoning-x", "score": 0.9, "support": 2.0,
             "records": 2},
            {"model": "m-dear", "kind": "domain", "dimension": "history-x", "score": None, "support": 0.0,
             "records": 0},
        ],
    )  # fmt: skip


def test_latency_percentiles(data: Session) -> None:
    # 10, 20, 30, 40 ms: linear interpolation (percentile_cont) puts p95 at 30 + 0.85 * 10 and p99 at 30 + 0.97 * 10
    same(
        rows(data, "latency"),
        [
            {"hour": "2026-01-05T10:00:00", "decisions": 4, "mean_ms": 25.0, "p50_ms": 25.0, "p95_ms": 38.5,
             "p99_ms": 39.7, "max_ms": 40.0},
            {"hour": "2026-01-06T09:00:00", "decisions": 1, "mean_ms": 100.0, "p50_ms": 100.0, "p95_ms": 100.0,
             "p99_ms": 100.0, "max_ms": 100.0},
        ],
    )  # fmt: skip
    only_later = rows(data, "latency", start=datetime(2026, 1, 6))
    assert [(r["hour"], r["p50_ms"]) for r in only_later] == [("2026-01-06T09:00:00", 100.0)]


def test_filters(data: Session) -> None:
    later = rows(data, "routing_volume", start=datetime(2026, 1, 6))
    assert [(r["hour"], r["decisions"]) for r in later] == [("2026-01-06T09:00:00", 1)]
    # `to` keeps the buckets that start before it: 10:30 still includes the 10:00 hour
    earlier = rows(data, "routing_volume", end=datetime(2026, 1, 5, 10, 30, tzinfo=UTC))
    assert {r["hour"] for r in earlier} == {"2026-01-05T10:00:00"}
    assert [r["caller"] for r in rows(data, "cost_savings", caller="bob")] == ["bob"]
    assert {r["model"] for r in rows(data, "model_quality", model="m-dear")} == {"m-dear"}
    assert len(rows(data, "cost_savings", start=datetime(2026, 1, 5), end=datetime(2026, 1, 6))) == 3
    with pytest.raises(ReportError, match="caller"):
        rows(data, "latency", caller="alice")
    with pytest.raises(ReportError, match="from"):
        rows(data, "profile_matrix", start=datetime(2026, 1, 5))


def test_reports_over_http(client: TestClient, data: Session) -> None:
    assert client.get("/admin/reports/cost_savings").status_code == 401
    listing = client.get("/admin/reports", headers=ADMIN).json()
    assert set(listing) == set(REPORT_VIEWS)
    response = client.get("/admin/reports/routing_volume?from=2026-01-06&caller=alice", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert [(r["hour"], r["decisions"]) for r in response.json()["rows"]] == [("2026-01-06T09:00:00", 1)]
    csv = client.get("/admin/reports/latency?format=csv", headers=ADMIN)
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0] == "hour,decisions,mean_ms,p50_ms,p95_ms,p99_ms,max_ms"
    assert lines[1].startswith("2026-01-05T10:00:00,4,25.0,25.0,38.5")
    assert client.get("/admin/reports/nope", headers=ADMIN).status_code == 404
    bad = client.get("/admin/reports/latency?model=m-dear", headers=ADMIN)
    assert bad.status_code == 422 and "model" in bad.json()["detail"]
    assert client.get("/admin/reports/latency?from=yesterday", headers=ADMIN).status_code == 422
    assert client.get("/admin/reports/latency?format=xml", headers=ADMIN).status_code == 422
    assert client.get("/admin/reports/latency?from=2026-01-06&to=2026-01-05", headers=ADMIN).status_code == 422
    # these were a 500 (the shift to UTC or to the next hour overflowed): a bound past the years any decision
    # can have is read as those years' edge
    everything = client.get("/admin/reports/routing_volume", headers=ADMIN).json()["rows"]
    for edge in ("from=0001-01-01T00:00:00%2B01:00", "to=9999-12-31T23:30:00"):
        far = client.get(f"/admin/reports/routing_volume?{edge}", headers=ADMIN)
        assert far.status_code == 200, far.text
        assert far.json()["rows"] == everything
    ahead = client.get("/admin/reports/latency?from=9999-12-31T23:59:59-01:00", headers=ADMIN)
    assert ahead.status_code == 200 and ahead.json()["rows"] == []


def _views(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_view_names())
    finally:
        engine.dispose()


def test_the_migration_creates_and_drops_the_views(databases: ThrowawayDatabases) -> None:
    url = databases.new()
    upgrade_database(url)
    assert _views(url) == set(REPORT_VIEWS)
    downgrade_database(url, "0002")
    assert _views(url) == set()
    upgrade_database(url)
    assert _views(url) == set(REPORT_VIEWS)


def _committed_database(databases: ThrowawayDatabases) -> str:
    url = databases.new()
    upgrade_database(url)
    engine = make_engine(url)
    with make_session_factory(engine)() as session, session.begin():
        build(session)
    engine.dispose()
    return url


def test_report_and_keys_commands(databases: ThrowawayDatabases, tmp_path: Any) -> None:
    url = _committed_database(databases)
    env = {"CAPPROF_DATABASE_URL": url, "CAPPROF_DATA_DIR": str(tmp_path), "CAPPROF_QDRANT_PATH": ":memory:"}
    runner = CliRunner()
    table = runner.invoke(cli, ["report", "latency"], env=env)
    assert table.exit_code == 0, table.output
    assert table.output.splitlines()[0].split() == [
        "hour",
        "decisions",
        "mean_ms",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "max_ms",
    ]
    assert "38.5" in table.output and "(2 rows)" in table.output
    csv = runner.invoke(cli, ["report", "cost_savings", "--from", "2026-01-06", "--format", "csv"], env=env)
    assert csv.exit_code == 0 and csv.output.splitlines()[1].startswith("2026-01-06,alice,m-cheap,1,0.003")
    refused = runner.invoke(cli, ["report", "latency", "--caller", "bob"], env=env)
    assert refused.exit_code == 2

    created = runner.invoke(cli, ["keys", "create", "--name", "ops", "--scope", "read", "--lambda", "0.5"], env=env)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("cpk_")
    listed = runner.invoke(cli, ["keys", "list"], env=env)
    assert "ops" in listed.output and "read" in listed.output and key not in listed.output
    assert runner.invoke(cli, ["keys", "create", "--name", "ops"], env=env).exit_code == 2
    assert runner.invoke(cli, ["keys", "revoke", "ops"], env=env).exit_code == 0
    assert runner.invoke(cli, ["keys", "revoke", "nobody"], env=env).exit_code == 2
    purged = runner.invoke(cli, ["purge"], env=env)
    assert purged.exit_code == 0 and "removed query data of 0 decisions" in purged.output
    if BACKEND == "sqlite":
        assert runner.invoke(cli, ["db", "grant-reporting", "analyst"], env=env).exit_code == 2


@pytest.mark.skipif(BACKEND != "postgres", reason="roles and grants are PostgreSQL's")
def test_the_reporting_role_reads_the_views_and_nothing_else(databases: ThrowawayDatabases) -> None:
    url = _committed_database(databases)
    role = f"capprof_reporting_{os.getpid()}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    owner = make_engine(url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    reader = make_engine(make_url(url).set(username=role, password=None).render_as_string(hide_password=False))
    try:
        result = CliRunner().invoke(cli, ["db", "grant-reporting", role], env={"CAPPROF_DATABASE_URL": url})
        assert result.exit_code == 0, result.output
        with reader.connect() as conn:
            assert conn.scalar(text("SELECT sum(decisions) FROM routing_volume")) == 5
            for view in REPORT_VIEWS:
                conn.execute(text(f"SELECT * FROM {view}")).all()
        for forbidden in (
            "SELECT * FROM api_keys",
            "SELECT * FROM routing_decisions",
            "INSERT INTO api_keys (name, key_hash, scopes) VALUES ('x', 'y', 'admin')",
            "DELETE FROM feedback",
            "CREATE TABLE sneaky (x int)",
            "CREATE OR REPLACE VIEW latency AS SELECT 1 AS hour",
        ):
            with reader.connect() as conn, pytest.raises(DBAPIError, match="permission denied|must be owner"):
                conn.execute(text(forbidden))
        with owner.begin() as conn, pytest.raises(ReportError):
            grant_reporting(conn, "bad name; DROP TABLE x")
    finally:
        reader.dispose()
        with owner.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
        owner.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()
