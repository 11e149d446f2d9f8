"""Dimensions added at run time take part in the very next route."""

from fastapi.testclient import TestClient

from tests.conftest import ADMIN

MARITIME = [
    "Under the law of the sea, who is liable when cargo is damaged during a voyage?",
    "What is general average in maritime law?",
    "Explain salvage rights for a ship rescued at sea.",
    "When can a shipowner limit liability under admiralty law?",
    "What does a bill of lading prove in a carriage of goods by sea dispute?",
]


def _seed_a_model(client: TestClient) -> None:
    evaluations = [{"text": t, "score": 1} for t in ("What is 2 + 2?", "Name a prime number.")]
    body = {"name": "tiny", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.1, "evaluations": evaluations}
    assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201


def _domains(client: TestClient, query: str) -> list[str]:
    response = client.post("/v1/route", json={"query": query})
    assert response.status_code == 200, response.text
    return [d["name"] for d in response.json()["profile"]["domains"]]


def test_a_new_domain_shows_up_in_the_next_query_profile(client: TestClient) -> None:
    _seed_a_model(client)
    query = "Is the carrier liable for goods lost overboard in a storm under maritime law?"
    assert "maritime law" not in _domains(client, query)

    body = {"kind": "domain", "name": "maritime law", "description": "shipping and admiralty", "exemplars": MARITIME}
    created = client.post("/v1/dimensions", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["exemplars"] == len(MARITIME)

    assert _domains(client, query)[0] == "maritime law"
    listed = {d["name"]: d for d in client.get("/v1/dimensions").json()}
    assert listed["maritime law"]["exemplars"] == len(MARITIME)
    assert {"reasoning", "coding", "multilingual"} <= set(listed)


def test_duplicate_or_bad_dimension_is_refused(client: TestClient) -> None:
    body = {"kind": "domain", "name": "astronomy", "exemplars": ["What is a light year?"]}
    assert client.post("/v1/dimensions", json=body, headers=ADMIN).status_code == 201
    duplicate = client.post("/v1/dimensions", json=body, headers=ADMIN)
    assert duplicate.status_code == 409
    bad = client.post("/v1/dimensions", json={"kind": "mood", "name": "x", "exemplars": []}, headers=ADMIN)
    assert bad.status_code == 422
    assert {"kind", "exemplars"} <= {e["field"] for e in bad.json()["errors"]}
    blank = client.post(
        "/v1/dimensions", json={"name": "   ", "exemplars": ["What is a comet?", " \t "]}, headers=ADMIN
    )
    assert blank.status_code == 422
    problems = {e["field"]: e["problem"] for e in blank.json()["errors"]}
    assert "blank" in problems["name"] and "blank" in problems["exemplars[1]"]
    assert client.post("/v1/dimensions", json=body).status_code == 401


def test_routing_without_models_is_503(client: TestClient) -> None:
    response = client.post("/v1/route", json={"query": "hello"})
    assert response.status_code == 503
    assert "model" in response.json()["detail"]
