"""Issue 10, hostile input: each finding is reproduced here and must now be a clear 4xx, never a 5xx."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError

from service.api.deps import RuntimeDep
from service.store.orm import LlmModel
from tests.conftest import ADMIN, BACKEND

GPT = {"name": "acme-large", "provider": "acme", "input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0}
JSON = {**ADMIN, "content-type": "application/json"}


def fields(response: object) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]  # type: ignore[attr-defined]


def test_nul_in_a_path_name_is_422_not_503(client: TestClient) -> None:
    for method, path in (
        ("GET", "/v1/models/%00"),
        ("GET", "/v1/models/a%00b"),
        ("PATCH", "/v1/models/%00"),
        ("DELETE", "/v1/models/%01x"),
        ("POST", "/v1/models/%00/evaluations"),
        ("POST", "/v1/models/%00/aptitude"),
    ):
        body = {"evaluations": [{"text": "q", "score": 1}]} if path.endswith("evaluations") else {}
        if path.endswith("aptitude"):
            body = {"answers": [{"item_id": 1, "score": 1}]}
        response = client.request(method, path, json=body if method != "GET" else None, headers=ADMIN)
        assert response.status_code == 422, (method, path, response.text)
        assert fields(response) == ["name"], response.json()
        assert "control character" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GPT, "name": "acme\x00"}, "name"),
        ({**GPT, "name": "\x1bacme"}, "name"),
        ({**GPT, "name": "acme\ud800"}, "name"),
        ({**GPT, "provider": "ac\x00me"}, "provider"),
        ({**GPT, "provider": "ac\nme"}, "provider"),
        ({**GPT, "price_basis": "list\x7f"}, "price_basis"),
        ({**GPT, "evaluations": [{"text": "What\x00 is 2+2?", "score": 1}]}, "evaluations[0].text"),
        ({**GPT, "evaluations": [{"text": "q", "benchmark": "b\x00", "score": 1}]}, "evaluations[0].benchmark"),
        ({**GPT, "evaluations": [{"query_id": "\x00", "score": 1}]}, "evaluations[0].query_id"),
    ],
)
def test_control_characters_in_names_and_texts_are_422(client: TestClient, body: dict, field: str) -> None:
    # json.dumps escapes a lone surrogate as "\ud800", as a hostile client would send it
    response = client.post("/v1/models", content=json.dumps(body), headers=JSON)
    assert response.status_code == 422, response.text
    assert field in fields(response)
    assert client.get("/v1/models/acme-large").status_code == 404


def test_newlines_and_tabs_are_fine_in_texts(client: TestClient) -> None:
    body = {**GPT, "evaluations": [{"text": "Line one\n\tline two\r\nend", "score": 1}]}
    assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201
    route = client.post("/v1/route", json={"messages": [{"role": "user", "content": "a\tb\nc"}]})
    assert route.status_code == 200, route.text
    assert client.post("/v1/route", json={"query": "what\x00 now"}).status_code == 422


def test_control_characters_in_dimensions_are_422(client: TestClient) -> None:
    cases = [
        ({"name": "law\x00", "exemplars": ["Is this contract binding?"]}, "name"),
        ({"name": "law", "description": "x\x00", "exemplars": ["Is this contract binding?"]}, "description"),
        ({"name": "law", "exemplars": ["Is this \x00 binding?"]}, "exemplars[0]"),
    ]
    for body, field in cases:
        response = client.post("/v1/dimensions", json=body, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert field in fields(response)


@pytest.mark.parametrize("tokens", [2**63, 2**31, -1])
def test_integers_outside_the_column_range_are_422(client: TestClient, tokens: int) -> None:
    body = {**GPT, "evaluations": [{"text": "Sum 2 and 2.", "score": 1, "output_tokens": tokens}]}
    response = client.post("/v1/models", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert fields(response) == ["evaluations[0].output_tokens"]


def test_the_largest_column_integer_is_accepted(client: TestClient) -> None:
    body = {**GPT, "evaluations": [{"text": "Sum 2 and 2.", "score": 1, "output_tokens": 2**31 - 1}]}
    assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201


@pytest.mark.parametrize("version", [2147483648, 2**63, 0])
def test_reranker_version_out_of_range_is_422(client: TestClient, version: int) -> None:
    response = client.post("/v1/reranker/activate", json={"version": version}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert fields(response) == ["version"]


def test_aptitude_ids_out_of_range_are_422(client: TestClient) -> None:
    assert client.post("/v1/models", json=GPT, headers=ADMIN).status_code == 201
    body = {"version": 2**40, "answers": [{"item_id": 2**63, "score": 1}]}
    response = client.post("/v1/models/acme-large/aptitude", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert set(fields(response)) == {"version", "answers[0].item_id"}


@pytest.mark.parametrize("raw", ["1e308", "Infinity", "-Infinity", "NaN", "1000.5"])
def test_absurd_or_non_finite_costs_are_422(client: TestClient, raw: str) -> None:
    assert client.post("/v1/models", json=GPT, headers=ADMIN).status_code == 201
    content = '{"evaluations": [{"text": "Name a prime.", "score": 1, "cost_usd": COST}]}'.replace("COST", raw)
    response = client.post("/v1/models/acme-large/evaluations", content=content, headers=JSON)
    assert response.status_code == 422, response.text
    assert fields(response) == ["evaluations[0].cost_usd"]
    # the finding: one such value made every later evaluation POST for the model fail (SQL AVG overflow)
    fine = {"evaluations": [{"text": "Name a prime.", "score": 1, "cost_usd": 0.002}]}
    assert client.post("/v1/models/acme-large/evaluations", json=fine, headers=ADMIN).status_code == 200


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"query": "hi", "lambda": Infinity}', "lambda"),
        ('{"query": "hi", "max_cost": NaN}', "max_cost"),
        ('{"query": "hi", "top_n": "3"}', "top_n"),
        ('{"query": "hi", "explain": "yes"}', "explain"),
    ],
)
def test_route_refuses_non_finite_numbers_and_coercions(client: TestClient, raw: str, field: str) -> None:
    response = client.post("/v1/route", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert field in fields(response)


def test_null_for_a_not_null_column_is_422(client: TestClient) -> None:
    assert client.post("/v1/models", json=GPT, headers=ADMIN).status_code == 201
    response = client.patch("/v1/models/acme-large", json={"status": None}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert fields(response) == ["status"]
    assert client.get("/v1/models/acme-large").json()["status"] == "active"
    # nullable columns may still be cleared with null
    cleared = client.patch("/v1/models/acme-large", json={"provider": None}, headers=ADMIN)
    assert cleared.status_code == 200 and cleared.json()["provider"] is None


def _probe_app(client: TestClient) -> FastAPI:
    """Adds a route that writes what the schemas would refuse, to prove the database's own refusal is a 4xx."""
    app: FastAPI = client.app  # type: ignore[assignment]

    @app.post("/_test/raw-write/{case}")
    def raw_write(case: str, runtime: RuntimeDep) -> dict[str, str]:
        with runtime.sessions() as session, session.begin():
            if case == "duplicate":
                session.add_all([LlmModel(name="twin"), LlmModel(name="twin")])
            elif case == "check":
                session.add(LlmModel(name="odd", status="sleeping"))
            elif case == "not-null":
                session.add(LlmModel(name=None))
            elif case == "nul" and BACKEND == "postgres":
                session.add(LlmModel(name="odd\x00"))
            else:
                raise DataError("INSERT ...", {}, ValueError("value out of range"))
            session.flush()
        return {}

    return app


@pytest.mark.parametrize(
    ("case", "code", "field"),
    [("duplicate", 409, "name"), ("check", 422, None), ("not-null", 422, "name"), ("nul", 422, "body")],
)
def test_database_refusals_are_4xx_naming_what_they_can(client: TestClient, case: str, code: int, field: str) -> None:
    _probe_app(client)
    response = client.post(f"/_test/raw-write/{case}")
    assert response.status_code == code, response.text
    body = response.json()
    assert set(body) == {"detail", "errors"}
    if field is not None:
        assert body["errors"][0]["field"] == field
    assert "INSERT" not in body["detail"] and "psycopg" not in body["detail"] and "sqlite" not in body["detail"]


def test_refused_route_requests_are_counted_in_metrics(client: TestClient) -> None:
    """The finding: /metrics counted only answered decisions, so a flood of refused requests was invisible."""
    assert client.post("/v1/route", json={"query": "hi", "top_n": 0}).status_code == 422
    assert client.post("/v1/route", json={"query": "no model is registered yet"}).status_code == 503
    assert client.post("/v1/route/batch", json={"requests": []}).status_code == 422
    text = client.get("/metrics").text
    assert 'capprof_route_requests_total{endpoint="route",status="422"} 1.0' in text
    assert 'capprof_route_requests_total{endpoint="route",status="503"} 1.0' in text
    assert 'capprof_route_requests_total{endpoint="route_batch",status="422"} 1.0' in text
