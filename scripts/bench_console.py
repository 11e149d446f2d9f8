"""The console's pages at scale: 10,000 models and 1,000,000 decisions in a scratch PostgreSQL database.

    .venv/bin/python scripts/bench_console.py [--models 10000] [--decisions 1000000] [--json out.json] [--keep]

Creates a scratch database on the server of CAPPROF_TEST_POSTGRES_URL (default: local trust auth), migrates it,
fills it in SQL (generate_series, no ORM loops): models with prices and upstreams, 100 evaluation records each,
a profile cell per model and dimension, an aptitude test taken by half the models, decisions spread over 30 days
with two dimension weights each, feedback on 5% of them, and a stored evaluation run. Then it times each console
page through the app (SQL and template rendering; no network), a few times each, and drops the database unless
--keep. "Try a query" is the /v1/route path, measured by `capprof bench`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from service.app import create_app  # noqa: E402
from service.cli import store_evaluation_report  # noqa: E402
from service.runtime import upgrade_database  # noqa: E402
from service.settings import Settings  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
DOMAINS = 60
QUERIES = 2_000
RECORDS_PER_MODEL = 100


def fill(url: str, models: int, decisions: int) -> dict[str, float]:
    """Bulk inserts in SQL; returns seconds per step."""
    steps = {
        "dimensions": f"""
            INSERT INTO dimensions (kind, name, description, source, catch_all)
            SELECT 'capability', c, '', 'bench', false
            FROM unnest(ARRAY['reasoning','coding','comprehension','knowledge retrieval','instruction following',
                              'agentic','multilingual']) AS c
            UNION ALL
            SELECT 'domain', 'domain ' || lpad(i::text, 3, '0'), '', 'bench', false
            FROM generate_series(1, {DOMAINS}) AS i""",
        "models": f"""
            INSERT INTO models (name, provider, input_usd_per_mtok, output_usd_per_mtok, status, endpoint_url)
            SELECT 'model-' || lpad(i::text, 5, '0'), 'provider-' || (i % 37), round((random() * 10)::numeric, 3),
                   round((random() * 40)::numeric, 3), CASE WHEN i % 50 = 0 THEN 'disabled' ELSE 'active' END,
                   CASE WHEN i % 10 = 0 THEN 'http://upstream.invalid/v1' END
            FROM generate_series(1, {models}) AS i""",
        "eval_queries": f"""
            INSERT INTO eval_queries (benchmark, external_id, text, text_hash)
            SELECT 'bench', 'q' || i, 'query ' || i, md5(i::text) FROM generate_series(1, {QUERIES}) AS i""",
        "eval_records": f"""
            INSERT INTO eval_records (model_id, query_id, score, cost_usd, source)
            SELECT m.id, q.id, (random() < 0.6)::int, random() / 1000, 'import'
            FROM models m CROSS JOIN generate_series(1, {RECORDS_PER_MODEL}) AS k
            JOIN eval_queries q ON q.external_id = 'q' || (((m.id * 37 + k * 101) % {QUERIES}) + 1)""",
        "profile_scores": """
            INSERT INTO profile_scores (model_id, dimension_id, weighted_sum, support, n)
            SELECT m.id, d.id, s * sup, sup, ceil(sup)::int
            FROM models m CROSS JOIN dimensions d
            CROSS JOIN LATERAL (SELECT random() AS s, 1 + random() * 40 AS sup) r""",
        "aptitude": """
            WITH t AS (INSERT INTO aptitude_tests (version, built_from) VALUES (1, '{}') RETURNING id),
                 tasks AS (INSERT INTO aptitude_tasks (test_id, position, description, keywords)
                           SELECT t.id, p, 'task ' || p, '[]' FROM t, generate_series(1, 10) AS p RETURNING id)
            INSERT INTO aptitude_results (model_id, task_id, accuracy, items)
            SELECT m.id, tasks.id, random(), 20 FROM models m CROSS JOIN tasks WHERE m.id % 2 = 0""",
        "routing_decisions": f"""
            INSERT INTO routing_decisions (id, created_at, query_hash, chosen_model, cost_weight, estimated_cost_usd,
                estimated_p_correct, candidates, profile, latency_ms, caller, key_name, baseline_max_cost_usd,
                baseline_best_model, baseline_best_cost_usd)
            SELECT md5(i::text)::uuid::text, now() - (i % 43200) * interval '1 minute', md5(i::text),
                   'model-' || lpad((1 + floor({models} * power(random(), 3)))::int::text, 5, '0'),
                   0.1, c, 0.5 + random() / 2, '[]', '{{}}', 5 + random() * 40 + CASE WHEN i % 100 = 0 THEN 200 ELSE 0 END,
                   'caller-' || (i % 5), 'caller-' || (i % 5), c * 4, 'model-00001', c * 2
            FROM generate_series(1, {decisions}) AS i CROSS JOIN LATERAL (SELECT random() / 1000 AS c) r""",
        "decision_dimensions": f"""
            INSERT INTO decision_dimensions (decision_id, dimension_id, weight, created_at)
            SELECT d.id, x.dim, x.w, d.created_at
            FROM routing_decisions d
            CROSS JOIN LATERAL (VALUES (1 + abs(hashtext(d.id)) % 7, 0.6),
                                       (8 + abs(hashtext(d.id || 'd')) % {DOMAINS}, 0.4)) AS x(dim, w)""",
        "feedback": """
            INSERT INTO feedback (decision_id, created_at, updated_at, model, caller, score, query_vector,
                                  eval_query_id)
            SELECT d.id, d.created_at, d.created_at, d.chosen_model, d.caller, (random() < 0.7)::int, '\\x00',
                   NULL
            FROM routing_decisions d WHERE abs(hashtext(d.id)) % 20 = 0""",
        "analyze": "ANALYZE",
    }
    seconds: dict[str, float] = {}
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name, sql in steps.items():
            started = time.perf_counter()
            conn.execute(text(sql))
            seconds[name] = round(time.perf_counter() - started, 1)
            print(f"  {name}: {seconds[name]} s", file=sys.stderr)
    engine.dispose()
    return seconds


def time_pages(url: str, repeat: int, models: int) -> list[dict[str, Any]]:
    """Median and worst server-side time of each page (the app without its lifespan: no embedder is loaded)."""
    settings = Settings(database_url=url, data_dir=Path(tempfile.mkdtemp()), admin_key=SecretStr(ADMIN_KEY))
    client = TestClient(create_app(settings))
    login = client.get("/console/login").text
    token = login.split('name="csrf" value="')[1].split('"')[0]
    answer = client.post("/console/login", data={"key": ADMIN_KEY, "csrf": token}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    pages = [
        "/console/models",
        f"/console/models?page={max(1, models // 100)}",  # the middle of the table
        "/console/models?sort=records&order=desc",
        f"/console/models?sort=accuracy&order=desc&page={max(1, models // 100)}",
        "/console/models?sort=provider&order=desc",
        "/console/models/model-00001",
        f"/console/models/model-{models // 2:05d}",
        "/console/profiles",
        f"/console/profiles?page={max(1, models // 80)}",
        "/console/traffic",  # the last 7 days
        "/console/traffic?from=" + time.strftime("%Y-%m-%d", time.gmtime(time.time() - 29 * 86400)),  # all 30
        "/console/quality",
    ]
    results = []
    for page in pages:
        samples = []
        for _ in range(repeat + 1):
            started = time.perf_counter()
            response = client.get(page)
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (page, response.status_code, response.text[:300])
        samples = samples[1:]  # the first is a warm-up (caches, template compilation)
        row = {"page": page, "median_ms": round(statistics.median(samples), 1), "max_ms": round(max(samples), 1)}
        print(f"  {page}: median {row['median_ms']} ms, max {row['max_ms']} ms", file=sys.stderr)
        results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--admin-url", default=ADMIN_URL, help="a PostgreSQL server's admin database")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--database", help="time the pages of a database filled before (--keep), without filling")
    args = parser.parse_args()
    if args.database:
        url = make_url(args.admin_url).set(database=args.database).render_as_string(hide_password=False)
        upgrade_database(url)
        print(json.dumps(time_pages(url, args.repeat, args.models), indent=2))
        return
    name = f"capprof_console_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(args.admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_database(url)
        print(f"filling {name}: {args.models} models, {args.decisions} decisions", file=sys.stderr)
        fill_seconds = fill(url, args.models, args.decisions)
        report = json.loads((ROOT / "docs" / "results" / "mmlu_pro" / "report.json").read_text())
        store_evaluation_report(
            Settings(database_url=url, admin_key=SecretStr(ADMIN_KEY)),
            report,
            {"data": "docs/results/mmlu_pro"},
        )
        pages = time_pages(url, args.repeat, args.models)
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    figures = {"models": args.models, "decisions": args.decisions, "fill_seconds": fill_seconds, "pages": pages}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
