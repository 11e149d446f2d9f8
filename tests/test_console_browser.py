"""The console in a real browser: headless Chromium (Debian's package) driven by Playwright, against the demo data
served by uvicorn on a real port, after some routed traffic and feedback.

CAPPROF_CONSOLE_SCREENSHOTS=1 saves each page to docs/console/<page>.png (the README links them).
Without Chromium or Playwright the test is skipped, except under CI, where it fails: .ci/run installs both.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from profiling.embedding_cache import CachedEmbedder
from service.app import create_app
from service.cli import store_evaluation_report
from service.console.queries import HEATMAP_DOMAINS
from service.jobs.bench import free_port
from service.runtime import Runtime
from service.store.orm import Dimension, LlmModel, RoutingDecision
from tests.conftest import REPO, ThrowawayDatabases
from tests.demo import DEMO_ADMIN_KEY, demo_runtime

SCREENSHOTS = REPO / "docs" / "console"
CHROMIUM = os.environ.get("CAPPROF_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


def _browser_or_skip() -> Any:
    """Playwright's sync API, or a skip (a failure under CI) when it or Chromium is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright (pip install -e '.[dev]')"
    else:
        if Path(CHROMIUM).exists():
            return sync_playwright
        missing = f"chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"console browser test needs {missing}; .ci/run installs it")
    pytest.skip(f"console browser test needs {missing}")


@dataclass
class Served:
    url: str
    runtime: Runtime


def _decisions(runtime: Runtime) -> int:
    with runtime.sessions() as session:  # a new transaction each time: it must see the writer's commits
        return session.scalar(select(func.count()).select_from(RoutingDecision)) or 0


def _traffic(url: str, runtime: Runtime) -> None:
    """Routes the first probe queries at a few lambdas, gives feedback on some, and spreads them over a week."""
    lines = (REPO / "data" / "probe" / "everyday_queries.jsonl").read_text().splitlines()[:36]
    queries = [json.loads(line)["text"] for line in lines]
    headers = {"Authorization": f"Bearer {DEMO_ADMIN_KEY}"}
    decisions = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        for i, query in enumerate(queries):
            body = {"query": query, "lambda": (0.0, 0.05, 0.5)[i % 3]}
            answer = http.post("/v1/route", json=body)
            assert answer.status_code == 200, answer.text
            decisions.append(answer.json())
        deadline = time.monotonic() + 30  # the decision log writes in the background
        while _decisions(runtime) < len(decisions):
            assert time.monotonic() < deadline, "decisions were not written"
            time.sleep(0.2)
        for i, decision in enumerate(decisions[::2]):
            p = decision["alternatives"][0]["p_correct"]
            score = 1.0 if (i * 7) % 10 < round(10 * p) else 0.0
            given = http.post("/v1/feedback", json={"decision_id": decision["decision_id"], "score": score})
            assert given.status_code in (200, 201), given.text
    with runtime.transaction() as session:
        for i, decision in enumerate(decisions):
            row = session.get(RoutingDecision, decision["decision_id"])
            assert row is not None
            row.created_at = row.created_at - timedelta(days=i % 7, hours=i % 5)
    report = json.loads((REPO / "docs" / "results" / "mmlu_pro" / "report.json").read_text())
    store_evaluation_report(runtime.settings, report, {"data": "data", "note": "docs/results/mmlu_pro"})


@pytest.fixture(scope="module")
def served(
    databases: ThrowawayDatabases, embedder: CachedEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    _browser_or_skip()
    runtime = demo_runtime(databases, embedder, tmp_path_factory.mktemp("console"), decision_flush_interval_s=0.1)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime=runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the console server did not start"
        time.sleep(0.1)
    url = f"http://127.0.0.1:{port}"
    _traffic(url, runtime)
    yield Served(url, runtime)
    server.should_exit = True
    thread.join(30)


def _expected_heatmap(runtime: Runtime, per_page: int) -> tuple[int, int]:
    """(models on the first page, dimensions shown): every capability and up to HEATMAP_DOMAINS domains."""
    with runtime.sessions() as session:
        models = session.scalar(select(func.count()).select_from(LlmModel)) or 0
        capabilities = session.scalar(select(func.count()).where(Dimension.kind == "capability")) or 0
        domains = (
            session.scalar(select(func.count()).where(Dimension.kind == "domain", Dimension.catch_all.is_(False))) or 0
        )
    return min(models, per_page), capabilities + min(domains, HEATMAP_DOMAINS)


CHART_DRAWN = """id => {
    const canvas = document.getElementById(id);
    const chart = Chart.getChart(canvas);
    if (!chart || chart.data.datasets.length === 0) return {points: 0, ink: 0};
    const points = chart.data.datasets[0].data.filter(v => v !== null).length;
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let ink = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) ink++;
    return {points, ink, elements: chart.getDatasetMeta(0).data.length};
}"""


def test_the_console_in_a_browser(served: Served) -> None:
    sync_playwright = _browser_or_skip()
    shots = os.environ.get("CAPPROF_CONSOLE_SCREENSHOTS") == "1"
    if shots:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))

        def shot(name: str) -> None:
            if shots:
                page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

        # no cookie: the login page, which comes back to the page asked for
        page.goto(f"{served.url}/console/traffic")
        assert "/console/login?next=%2Fconsole%2Ftraffic" in page.url
        page.fill("#key", "not-the-key")
        page.click("#login")
        assert page.locator("[role=alert]").count() == 1 and "/console/login" in page.url
        errors.clear()  # the 401 of the wrong key is logged by the browser as a failed resource
        shot("login")
        page.fill("#key", DEMO_ADMIN_KEY)
        page.click("#login")
        page.wait_for_url("**/console/traffic")

        # Traffic: every chart has drawn its series
        for chart in ("chart-volume", "chart-savings", "chart-mix_capability", "chart-mix_domain", "chart-latency"):
            drawn = page.evaluate(CHART_DRAWN, chart)
            assert drawn["points"] > 0 and drawn["elements"] > 0 and drawn["ink"] > 500, (chart, drawn)
        assert "saved" in page.inner_text("#totals")
        shot("traffic")

        # Models: a table with every demo model on the first page, each linking to its page
        page.goto(f"{served.url}/console/models")
        rows = page.locator("#models tbody tr").count()
        per_page_models, dimensions = _expected_heatmap(served.runtime, 50)
        assert rows == per_page_models
        shot("models")
        page.click("#models tbody tr:first-child td:first-child a")
        page.wait_for_selector("#chart-profile")
        assert page.evaluate(CHART_DRAWN, "chart-profile")["points"] > 0
        shot("model")

        # Profiles: one cell per model x shown dimension
        page.goto(f"{served.url}/console/profiles")
        models_shown, dimensions = _expected_heatmap(served.runtime, 40)
        assert page.locator("#heatmap thead th.dim").count() == dimensions
        assert page.locator("#heatmap tbody tr").count() == models_shown
        assert page.locator("#heatmap td.cell").count() == models_shown * dimensions
        assert page.locator("#heatmap td.cell[data-score]").count() > 0
        shot("profiles")

        # Try a query: a chosen model, its alternatives and its explanation as bars
        page.goto(f"{served.url}/console/try")
        page.fill("#text", "Write a SQL query that lists the ten customers with the highest total order value.")
        page.eval_on_selector("#lambda", "el => { el.value = '0.3'; el.dispatchEvent(new Event('input')); }")
        assert page.is_checked("#mode-lambda") and page.inner_text("#lambda-value") == "0.3"
        page.click("#route")
        page.wait_for_selector("#chosen-model")
        chosen = page.inner_text("#chosen-model")
        with served.runtime.sessions() as session:
            assert chosen in set(session.scalars(select(LlmModel.name)))
        assert page.locator("#alternatives tbody tr").count() >= 2
        assert page.locator("#explanation .explain-bar").count() >= 4
        shot("try")

        # Quality: the stored evaluation's cost-quality curve and calibration from feedback
        page.goto(f"{served.url}/console/quality")
        curve = page.locator("canvas[id^=chart-curve-]").first.get_attribute("id")
        assert curve is not None and page.evaluate(CHART_DRAWN, curve)["points"] > 0
        assert page.evaluate(CHART_DRAWN, "chart-calibration")["points"] > 0
        shot("quality")

        assert errors == []
        # logout: the pages are closed again
        page.click("#logout")
        page.wait_for_url("**/console/login")
        page.goto(f"{served.url}/console/models")
        assert "/console/login?next=" in page.url
        browser.close()
