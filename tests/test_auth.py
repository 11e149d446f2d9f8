"""API keys: every route of the app is classified, and keys are refused when missing, wrong, revoked or too small.

The table below names the scope each endpoint needs. A new endpoint fails `test_every_route_is_classified` until it
is added here, so nothing can slip through unprotected. Open on purpose: health, readiness, metrics, OpenAPI docs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fastapi.routing
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from profiling.embedding_cache import CachedEmbedder
from service.registry.keys import hash_key
from service.runtime import Runtime
from service.store.orm import ApiKey, Base, RoutingDecision
from service.store.vector_store import VectorStore
from tests.conftest import ADMIN
from tests.operating import KEY_SECRET, bearer, new_key, operating_client, revoked_key

OPEN = None
SCOPES: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): OPEN,
    ("GET", "/readyz"): OPEN,
    ("GET", "/metrics"): OPEN,
    ("GET", "/openapi.json"): OPEN,
    ("GET", "/docs"): OPEN,
    ("GET", "/docs/oauth2-redirect"): OPEN,
    ("GET", "/redoc"): OPEN,
    ("POST", "/v1/route"): "route",
    ("POST", "/v1/route/batch"): "route",
    ("POST", "/v1/feedback"): "route",
    ("GET", "/v1/presets"): "route",
    ("GET", "/openai/v1/models"): "route",
    ("POST", "/openai/v1/chat/completions"): "route",
    ("GET", "/v1/aptitude/answers"): "admin",
    ("GET", "/v1/models"): "read",
    ("GET", "/v1/models/{name:path}"): "read",
    ("GET", "/v1/dimensions"): "read",
    ("GET", "/v1/aptitude"): "read",
    ("GET", "/v1/reranker"): "read",
    ("POST", "/v1/models"): "admin",
    ("PATCH", "/v1/models/{name:path}"): "admin",
    ("DELETE", "/v1/models/{name:path}"): "admin",
    ("POST", "/v1/models/{name:path}/evaluations"): "admin",
    ("POST", "/v1/models/{name:path}/aptitude"): "admin",
    ("POST", "/v1/dimensions"): "admin",
    ("POST", "/v1/reranker/activate"): "admin",
    ("POST", "/admin/keys"): "admin",
    ("GET", "/admin/keys"): "admin",
    ("DELETE", "/admin/keys/{name}"): "admin",
    ("GET", "/admin/reports"): "admin",
    ("GET", "/admin/reports/{name}"): "admin",
}
# The console authenticates with its own session cookie (an admin key given once to its login form), not key
# headers; tests/test_console.py checks its refusals.
CONSOLE = "console"
SCOPES |= {
    ("GET", "/console/login"): OPEN,
    ("POST", "/console/login"): CONSOLE,
    ("POST", "/console/logout"): CONSOLE,
    ("GET", "/console"): CONSOLE,
    ("GET", "/console/static/{name}"): OPEN,
    ("GET", "/console/models"): CONSOLE,
    ("GET", "/console/models/{name:path}"): CONSOLE,
    ("GET", "/console/profiles"): CONSOLE,
    ("GET", "/console/traffic"): CONSOLE,
    ("GET", "/console/try"): CONSOLE,
    ("POST", "/console/try"): CONSOLE,
    ("GET", "/console/quality"): CONSOLE,
}
SMALLER = {"read": "route", "admin": "read"}


def app_routes(client: TestClient) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers expanded."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", lambda routes: routes)
    found = set()
    for route in iterate(client.app.routes):  # type: ignore[attr-defined]
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    return found


@pytest.fixture
def keyed(
    tmp_path: Path, embedder: CachedEmbedder, session_factory: sessionmaker[Session], store: VectorStore
) -> Iterator[tuple[TestClient, Runtime, dict[str, str]]]:
    with operating_client(tmp_path, embedder, session_factory, store) as (client, runtime):
        keys = {scope: new_key(runtime, f"{scope}-key", scope) for scope in ("route", "read", "admin")}
        keys["revoked"] = revoked_key(runtime, "gone-key")
        yield client, runtime, keys


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> int:
    concrete = path.replace("{name:path}", "no-such-thing").replace("{name}", "no-such-thing")
    body = None if method in ("GET", "DELETE") else {}
    return client.request(method, concrete, json=body, headers=headers).status_code


def test_every_route_is_classified(keyed) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = keyed
    routes = app_routes(client)
    assert routes - set(SCOPES) == set(), "new endpoints: give each a scope in SCOPES (and protect them)"
    assert set(SCOPES) - routes == set(), "SCOPES names endpoints the app no longer has"


def test_protected_routes_refuse_missing_wrong_revoked_and_too_small_keys(keyed) -> None:  # type: ignore[no-untyped-def]
    client, _, keys = keyed
    refusals = {
        "no key": {},
        "unknown key": bearer("cpk_" + "x" * 43),
        "revoked key": bearer(keys["revoked"]),
        "empty bearer": {"Authorization": "Bearer "},
        "empty admin header": {"X-Admin-Key": ""},
        "basic auth": {"Authorization": "Basic YWRtaW46YWRtaW4="},
    }
    for (method, path), scope in sorted(SCOPES.items(), key=str):
        if scope is OPEN or scope == CONSOLE:
            continue
        for case, headers in refusals.items():
            assert _call(client, method, path, headers) == 401, (method, path, case)
        if scope in SMALLER:
            assert _call(client, method, path, bearer(keys[SMALLER[scope]])) == 403, (method, path)
        for enough in ("route", "read", "admin")[("route", "read", "admin").index(scope) :]:
            assert _call(client, method, path, bearer(keys[enough])) not in (401, 403), (method, path, enough)
        assert _call(client, method, path, ADMIN) not in (401, 403), (method, path, "bootstrap admin")


def test_open_routes_answer_without_a_key(keyed) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = keyed
    for (method, path), scope in SCOPES.items():
        if scope is OPEN and path not in ("/readyz", "/console/static/{name}"):
            assert client.request(method, path).status_code == 200, path
    assert client.get("/console/static/console.js").status_code == 200


def test_the_stored_hash_is_not_a_key_and_the_secret_is_not_in_the_database(keyed) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = keyed
    with runtime.sessions() as session:
        stored = session.scalar(select(ApiKey.key_hash).where(ApiKey.name == "admin-key"))
        assert stored == hash_key(KEY_SECRET.encode(), keys["admin"])
        assert client.get("/admin/keys", headers=bearer(stored)).status_code == 401
        assert client.get("/admin/keys", headers=bearer(keys["admin"])).status_code == 200
        for table in Base.metadata.sorted_tables:
            for row in session.execute(text(f'SELECT * FROM "{table.name}"')):
                for value in row:
                    blob = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    assert KEY_SECRET not in blob, table.name
                    assert all(key not in blob for key in keys.values()), table.name


def test_keys_over_http_are_shown_once_listed_without_secrets_and_revoked_at_once(keyed) -> None:  # type: ignore[no-untyped-def]
    client, _, keys = keyed
    created = client.post(
        "/admin/keys", json={"name": "billing", "scope": "read", "lambda": 0.2}, headers=bearer(keys["admin"])
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith("cpk_") and len(key) >= 4 + 43  # 256 random bits, url-safe base64
    assert created.json()["lambda"] == 0.2

    listed = client.get("/admin/keys", headers=ADMIN)
    assert "billing" in [k["name"] for k in listed.json()]
    assert key not in listed.text and "key_hash" not in listed.text

    assert client.get("/v1/models", headers=bearer(key)).status_code == 200
    assert client.delete("/admin/keys/billing", headers=ADMIN).json()["revoked_at"] is not None
    assert client.get("/v1/models", headers=bearer(key)).status_code == 401

    assert client.post("/admin/keys", json={"name": "billing"}, headers=ADMIN).status_code == 409
    assert client.post("/admin/keys", json={"name": "admin"}, headers=ADMIN).status_code == 409
    bad = client.post("/admin/keys", json={"name": "x", "scope": "root"}, headers=ADMIN)
    assert bad.status_code == 422 and "scope" in bad.json()["detail"]
    for field, value in (("lambda", "5"), ("monthly_budget_usd", "10")):
        coerced = client.post("/admin/keys", json={"name": "typed", field: value}, headers=ADMIN)
        assert coerced.status_code == 422 and coerced.json()["errors"][0]["field"] == field
    unbounded = client.post(
        "/admin/keys",
        content=b'{"name": "typed", "monthly_budget_usd": Infinity}',
        headers=ADMIN | {"content-type": "application/json"},
    )
    assert unbounded.status_code == 422  # it came back as a budget of null: none at all
    assert client.delete("/admin/keys/nobody", headers=ADMIN).status_code == 404


def test_development_lets_anonymous_callers_route_and_read_but_not_administer(
    tmp_path: Path, embedder: CachedEmbedder, session_factory: sessionmaker[Session], store: VectorStore
) -> None:
    with operating_client(tmp_path, embedder, session_factory, store, require_keys=None) as (client, runtime):
        assert runtime.settings.keys_required is False
        assert client.get("/v1/models").status_code == 200
        assert client.post("/v1/route", json={"query": "What is 2 + 2?"}).status_code == 200
        assert client.get("/admin/keys").status_code == 401
        assert client.get("/v1/models", headers=bearer("cpk_wrong")).status_code == 401  # a wrong key still fails
        # an anonymous request labelled with a key's name is not logged as that key's
        key = new_key(runtime, "support-bot", "route")
        keyed = client.post("/v1/route", json={"query": "What is 3 + 3?"}, headers=bearer(key)).json()
        spoof = client.post("/v1/route", json={"query": "What is 4 + 4?"}, headers={"X-Caller": "support-bot"}).json()
        assert client.app.state.decision_log.flush() >= 2  # type: ignore[attr-defined]
        with runtime.sessions() as session:
            rows = {d: session.get(RoutingDecision, d) for d in (keyed["decision_id"], spoof["decision_id"])}
        logged = {d: (r.caller, r.key_name, r.caller_label) for d, r in rows.items() if r is not None}
        assert logged == {
            keyed["decision_id"]: ("support-bot", "support-bot", None),
            spoof["decision_id"]: (None, None, "support-bot"),
        }


def test_the_decision_log_names_the_key_and_keeps_x_caller_as_a_label(keyed) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = keyed
    headers = {**bearer(keys["route"]), "X-Caller": "read-key"}  # a spoofing attempt: it stays a label
    decision = client.post("/v1/route", json={"query": "Who was the first emperor of Rome?"}, headers=headers).json()
    assert client.app.state.decision_log.flush() >= 1  # type: ignore[attr-defined]
    with runtime.sessions() as session:
        row = session.get(RoutingDecision, decision["decision_id"])
    assert row is not None
    assert (row.caller, row.key_name, row.caller_label) == ("route-key", "route-key", "read-key")


def test_a_keys_default_lambda_applies_only_when_the_request_names_none(keyed) -> None:  # type: ignore[no-untyped-def]
    client, runtime, _ = keyed
    key = new_key(runtime, "thrifty", "route", default_lambda=2.5)
    query = {"query": "Write a Python function that merges two sorted lists."}
    implicit = client.post("/v1/route", json=query, headers=bearer(key)).json()
    explicit = client.post("/v1/route", json={**query, "lambda": 0}, headers=bearer(key)).json()
    client.app.state.decision_log.flush()  # type: ignore[attr-defined]
    with runtime.sessions() as session:
        weights = {
            d: session.get(RoutingDecision, d).cost_weight  # type: ignore[union-attr]
            for d in (implicit["decision_id"], explicit["decision_id"])
        }
    assert weights == {implicit["decision_id"]: 2.5, explicit["decision_id"]: 0.0}
    # the dear model wins on quality, the cheap one once cost counts
    assert (explicit["model"], implicit["model"]) == ("dear-model", "cheap-model")
