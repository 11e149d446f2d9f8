"""The admin console over plain HTTP: login, session cookie, CSRF, refusals, pagination and bad parameters."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from service.console.session import SESSION_COOKIE, admin_fingerprint, sign
from service.registry.evaluations import latest_evaluations, store_evaluation
from service.registry.keys import revoke_key
from service.runtime import upgrade_database
from service.store.db import make_engine
from service.store.orm import LlmModel
from tests.conftest import ADMIN, REPO, ThrowawayDatabases
from tests.operating import CODING, HISTORY, MODELS, new_key

ADMIN_KEY = ADMIN["X-Admin-Key"]
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def form_token(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def log_in(client: TestClient, key: str, next_path: str = "/console/models") -> TestClient:
    token = form_token(client, "/console/login")
    response = client.post(
        "/console/login", data={"key": key, "csrf": token, "next": next_path}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return client


def with_cookie(client: TestClient, value: str) -> int:
    """The status of the models page with exactly this session cookie."""
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, value)
    return client.get("/console/models", follow_redirects=False).status_code


def test_pages_without_a_session_redirect_to_login_with_a_local_next(operating) -> None:  # type: ignore[no-untyped-def]
    client, _ = operating
    for path in ("/console", "/console/models", "/console/profiles", "/console/traffic", "/console/try",
                 "/console/quality", "/console/models/cheap-model"):  # fmt: skip
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/login?next=%2Fconsole"), path
    page = client.get("/console/login?next=https://evil.example/console")
    assert 'name="next" value="/console/models"' in page.text
    page = client.get("/console/login?next=/console/traffic%3Ffrom%3D2026-01-01")
    assert 'name="next" value="/console/traffic?from=2026-01-01"' in page.text
    for outside in ("/console/../admin", "/console/%2e%2e/admin/keys", "/console/./models"):
        page = client.get("/console/login", params={"next": outside})
        assert 'name="next" value="/console/models"' in page.text, outside  # a browser resolves dot segments


def test_login_sets_a_strict_httponly_cookie_without_the_key_and_logout_clears_it(operating) -> None:  # type: ignore[no-untyped-def]
    client, _ = operating
    token = form_token(client, "/console/login")
    response = client.post(
        "/console/login",
        data={"key": ADMIN_KEY, "csrf": token, "next": "/console/profiles"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/console/profiles"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; https sets it
    assert ADMIN_KEY not in cookie
    assert client.get("/console/models").status_code == 200
    logout = client.post(
        "/console/logout", data={"csrf": form_token(client, "/console/models")}, follow_redirects=False
    )
    assert logout.status_code == 303 and logout.headers["location"] == "/console/login"
    assert client.get("/console/models", follow_redirects=False).status_code == 303


def test_a_wrong_key_shows_the_login_again_with_401_and_small_scopes_are_refused(operating) -> None:  # type: ignore[no-untyped-def]
    client, runtime = operating
    for key, code in (("not-a-key", 401), ("", 401), (new_key(runtime, "reader", "read"), 403),
                      (new_key(runtime, "router", "route"), 403)):  # fmt: skip
        token = form_token(client, "/console/login")
        response = client.post("/console/login", data={"key": key, "csrf": token}, follow_redirects=False)
        assert response.status_code == code, key
        assert 'role="alert"' in response.text and 'name="key"' in response.text
        assert SESSION_COOKIE not in client.cookies
    admin = new_key(runtime, "ops-admin", "admin")
    log_in(client, admin)
    assert client.get("/console/models").status_code == 200


def test_posts_need_the_csrf_token_of_their_session(operating) -> None:  # type: ignore[no-untyped-def]
    client, _ = operating
    form_token(client, "/console/login")  # sets the pre-session cookie
    for data in ({"key": ADMIN_KEY}, {"key": ADMIN_KEY, "csrf": "forged"}):
        assert client.post("/console/login", data=data, follow_redirects=False).status_code == 403
    log_in(client, ADMIN_KEY)
    good = form_token(client, "/console/try")
    for data in ({"text": "hello"}, {"text": "hello", "csrf": good[:-2] + "xx"}):
        assert client.post("/console/try", data=data).status_code == 403
        assert client.post("/console/logout", data=data, follow_redirects=False).status_code == 403
    # the right token from another origin is refused too
    for origin in ("https://evil.example", "null", "http://testserver.evil.example"):
        cross = client.post("/console/try", data={"text": "hi", "csrf": good}, headers={"Origin": origin})
        assert cross.status_code == 403, origin
    # behind a proxy the port (and scheme) the browser saw may differ from this process's; the host may not
    same = client.post("/console/try", data={"text": "hi", "csrf": good}, headers={"Origin": "https://testserver:8443"})
    assert same.status_code == 200
    # and a token of another session does not fit this one
    other = TestClient(client.app)
    log_in(other, ADMIN_KEY)
    assert (
        client.post("/console/try", data={"text": "hi", "csrf": form_token(other, "/console/try")}).status_code == 403
    )


def test_tampered_expired_and_revoked_sessions_are_refused(operating) -> None:  # type: ignore[no-untyped-def]
    client, runtime = operating
    admin = new_key(runtime, "temp-admin", "admin")
    log_in(client, admin)
    assert client.get("/console/models").status_code == 200
    genuine = client.cookies[SESSION_COOKIE]
    body, mac = genuine.split(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    admin = {"k": None, "n": "admin", "f": admin_fingerprint(runtime.settings), "sid": "s"}
    assert with_cookie(client, sign(runtime.settings, admin | {"exp": int(time.time()) + 60})) == 200
    expired = sign(runtime.settings, admin | {"exp": int(time.time()) - 5})
    other_secret = sign(
        runtime.settings.model_copy(update={"admin_key": runtime.settings.admin_key, "key_secret": None}),
        {"k": None, "n": "admin", "exp": int(time.time()) + 600, "sid": "s"},
    )
    for value in (tampered, expired, other_secret, "garbage", ""):
        assert with_cookie(client, value) == 303, value
    assert with_cookie(client, genuine) == 200
    with runtime.transaction() as session:
        revoke_key(session, "temp-admin")
    assert client.get("/console/models", follow_redirects=False).status_code == 303


def test_bad_sort_and_page_parameters_are_4xx_naming_the_parameter(operating) -> None:  # type: ignore[no-untyped-def]
    client, _ = operating
    log_in(client, ADMIN_KEY)
    for query, field in (("sort=price;DROP", "sort"), ("order=sideways", "order"), ("page=0", "page"),
                         ("page=abc", "page"), ("per_page=100000", "per_page"), ("page=99", "page")):  # fmt: skip
        response = client.get(f"/console/models?{query}")
        assert response.status_code == 422, query
        assert response.json()["detail"].startswith(f"{field}:"), response.json()
    assert client.get("/console/profiles?page=-1").json()["detail"].startswith("page:")
    assert client.get("/console/traffic?from=2026-02-30").json()["detail"].startswith("from:")
    assert client.get("/console/traffic?from=2026-03-02&to=2026-03-01").json()["detail"].startswith("from:")
    assert client.get("/console/traffic?to=0001-01-03").status_code == 200  # was a 500 (date overflow)
    assert client.get("/console/traffic?from=9999-12-30&to=9999-12-31").status_code == 200
    assert client.get("/console/models/no-such-model").status_code == 404


def test_the_models_table_paginates_and_sorts_in_sql(operating, db: Session) -> None:  # type: ignore[no-untyped-def]
    client, _ = operating
    db.execute(insert(LlmModel), [{"name": f"bulk-{i:03d}", "provider": "bulk", "input_usd_per_mtok": i / 100}
                                  for i in range(120)])  # fmt: skip
    db.commit()
    total = db.scalar(select(func.count()).select_from(LlmModel))
    log_in(client, ADMIN_KEY)
    names: list[str] = []
    for page in range(1, -(-total // 50) + 1):
        text = client.get(f"/console/models?page={page}&per_page=50").text
        names += re.findall(r'<td><a href="/console/models/[^"]+">([^<]+)</a></td>', text)
    assert len(names) == total and names == sorted(names)
    desc = client.get("/console/models?sort=input_price&order=desc&per_page=3").text
    assert re.findall(r'<td><a href="/console/models/[^"]+">([^<]+)</a></td>', desc) == [
        "dear-model",
        "bulk-119",
        "bulk-118",
    ]
    by_records = client.get("/console/models?sort=records&order=desc&per_page=2").text
    top = re.findall(r'<td><a href="/console/models/[^"]+">([^<]+)</a></td>', by_records)
    assert set(top) == {m["name"] for m in MODELS}  # the only models with evaluation records


def test_try_a_query_routes_through_the_api_path_and_explains(operating) -> None:  # type: ignore[no-untyped-def]
    client, _ = operating
    log_in(client, ADMIN_KEY)
    token = form_token(client, "/console/try")
    page = client.post(
        "/console/try",
        data={
            "csrf": token,
            "text": "Write a Python function that reverses a linked list.",
            "mode": "lambda",
            "lambda": "0",
        },  # fmt: skip
    )
    assert page.status_code == 200, page.text
    chosen = re.search(r'<span id="chosen-model">([^<]+)</span>', page.text)
    assert chosen and chosen.group(1) in {m["name"] for m in MODELS}
    assert page.text.count('class="explain-bar') >= 4
    chat = client.post(
        "/console/try",
        data={
            "csrf": token,
            "chat": "true",
            "text": "user: hi\nassistant: hello\nuser: who was the first emperor of Rome?",
        },
    )
    assert chat.status_code == 200 and 'id="chosen-model"' in chat.text
    blank = client.post("/console/try", data={"csrf": token, "text": "   "})
    assert blank.status_code == 422 and 'role="alert"' in blank.text
    for bad, named in (
        ({"mode": "lambda", "lambda": "abc"}, "lambda: &#39;abc&#39; is not a number"),
        ({"mode": "lambda", "lambda": "-1"}, "lambda:"),
        ({"mode": "lambda", "lambda": "inf"}, "lambda:"),
        ({"mode": "cheapest"}, "mode: must be one of"),
    ):
        refused = client.post("/console/try", data={"csrf": token, "text": "What is 2+2?"} | bad)
        assert refused.status_code == 422 and 'role="alert"' in refused.text, refused.text  # the form, not JSON
        assert named in refused.text and 'name="lambda"' in refused.text


CELL = re.compile(r'data-model="cheap-model" data-dimension="([^"]+)" data-score="([^"]+)" data-raw="([^"]*)"')


def test_profiles_show_the_scores_routing_uses_beside_the_raw_share(operating) -> None:  # type: ignore[no-untyped-def]
    client, runtime = operating
    log_in(client, ADMIN_KEY)
    state = runtime.router.state
    routing = state.routing_profile("cheap-model")
    dimension = dict(zip(state.profiler.catalog.names, state.profiler.catalog.ids, strict=True))
    cells = CELL.findall(client.get("/console/profiles").text)
    assert cells
    for name, score, _ in cells:
        assert float(score) == pytest.approx(routing[dimension[name]], abs=1e-4), name
    # three records a domain, all right or all wrong: routing shrinks them toward the model's mean
    assert any(raw and abs(float(score) - float(raw)) > 0.05 for _, score, raw in cells)
    page = client.get("/console/models/cheap-model").text
    chart = json.loads(re.search(r'<script type="application/json" id="data-profile">(.+?)</script>', page, re.S)[1])
    used, raw = chart["data"]["datasets"]
    labels = chart["data"]["labels"]
    assert used["data"] == pytest.approx([routing[dimension[label]] for label in labels])
    assert used["data"] != pytest.approx(raw["data"])


def test_evaluate_store_keeps_the_report_and_quality_shows_the_newest(operating, db: Session) -> None:  # type: ignore[no-untyped-def]
    client, _ = operating
    import json

    report = json.loads((REPO / "docs" / "results" / "mmlu_pro" / "report.json").read_text())
    store_evaluation(db, report | {"seed": 1}, {"data": "old"})
    newest = store_evaluation(db, report, {"data": "new"})
    db.commit()
    assert [r.id for r in latest_evaluations(db)] == [newest.id]
    log_in(client, ADMIN_KEY)
    page = client.get("/console/quality")
    assert page.status_code == 200
    assert f'id="chart-curve-{newest.id}"' in page.text and "chart-curve-" + str(newest.id - 1) not in page.text


def test_console_files_are_served_from_the_package_and_nothing_else(operating) -> None:  # type: ignore[no-untyped-def]
    client, _ = operating
    chart = client.get("/console/static/chart.umd.min.js")
    assert chart.status_code == 200 and "Chart.js v4" in chart.text[:200]
    assert "MIT" in client.get("/console/static/chart.js.LICENSE.md").text
    for name in ("..%2Fsession.py", "session.py", ".hidden.js", "missing.js"):
        assert client.get(f"/console/static/{name}").status_code == 404, name


def test_capprof_evaluate_store_writes_the_run_into_the_configured_database(
    databases: ThrowawayDatabases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--store keeps the evaluation's report in the settings' database; without it nothing is stored."""
    import json

    from typer.testing import CliRunner

    from service.cli import app as cli

    url = databases.new()
    upgrade_database(url)
    report = json.loads((REPO / "docs" / "results" / "mmlu_pro" / "report.json").read_text())

    def fake_evaluation(data: Path, benchmark: str, out: Path, *args: object, **kwargs: object) -> dict[str, object]:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(f"# {benchmark}\n")
        return report | {"benchmark": benchmark}

    monkeypatch.setattr("service.jobs.evaluate.evaluate", fake_evaluation)
    env = {"CAPPROF_DATABASE_URL": url, "CAPPROF_DATA_DIR": str(tmp_path)}
    base = ["evaluate", "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    for benchmark, extra in (("not-stored", []), ("mmlu_pro", ["--store"])):
        result = CliRunner().invoke(cli, [*base, "--benchmark", benchmark, *extra], env=env)
        assert result.exit_code == 0, result.output
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            runs = latest_evaluations(session)
            assert [r.benchmark for r in runs] == ["mmlu_pro"]
            assert runs[0].report["cost_quality"] == report["cost_quality"] and runs[0].options["data"] == str(tmp_path)
    finally:
        engine.dispose()


def _chart(page: str, name: str) -> dict[str, object]:
    import json

    found = re.search(rf'<script type="application/json" id="data-{name}">(.*?)</script>', page, re.S)
    assert found, name
    return json.loads(found.group(1))


def test_traffic_counts_each_decision_once_per_day_model_and_dimension(operating) -> None:  # type: ignore[no-untyped-def]
    client, _ = operating
    queries = [*HISTORY, *CODING]
    for query in queries:
        assert client.post("/v1/route", json={"query": query, "lambda": 0}, headers=ADMIN).status_code == 200
    assert client.app.state.decision_log.flush() == len(queries)  # type: ignore[attr-defined]
    log_in(client, ADMIN_KEY)
    page = client.get("/console/traffic").text
    assert f"{len(queries)} decisions:" in page
    volume = _chart(page, "volume")["data"]
    assert sum(sum(d["data"]) for d in volume["datasets"]) == len(queries)  # type: ignore[index]
    assert {d["label"] for d in volume["datasets"]} <= {m["name"] for m in MODELS}  # type: ignore[index]
    savings = _chart(page, "savings")["data"]["datasets"]  # type: ignore[index]
    assert sum(x for x in savings[0]["data"] if x is not None) > 0  # the routed cost
    mix = _chart(page, "mix_capability")["data"]["datasets"][0]["data"]  # type: ignore[index]
    assert 0 < sum(mix) <= len(queries) + 1e-6  # weights: each query's capability weights sum to at most 1
    latency = _chart(page, "latency")["data"]["datasets"]  # type: ignore[index]
    assert all(p50 is not None and p50 <= p99 for p50, p99 in zip(latency[0]["data"], latency[1]["data"], strict=True))
    earlier = client.get("/console/traffic?from=2020-01-01&to=2020-01-31").text
    assert "0 decisions:" in earlier


def test_model_and_profile_pages_render_while_the_routing_state_is_not_loaded(operating) -> None:  # type: ignore[no-untyped-def]
    """A replica whose stores were down at start-up has no routing state yet: the pages show the stored profiles
    instead of failing (they were a 500)."""
    client, runtime = operating
    log_in(client, ADMIN_KEY)
    runtime.router._state = None  # as before the first successful load
    assert not runtime.router.loaded
    for path in ("/console/models/cheap-model", "/console/profiles"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:300])
    assert "cheap-model" in client.get("/console/profiles").text
