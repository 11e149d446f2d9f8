"""Model registry endpoints: happy paths, 401, 404, 409 and 422 naming the field."""

from fastapi.testclient import TestClient

from tests.conftest import ADMIN

GPT = {"name": "acme-large", "provider": "acme", "input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0}


def test_register_read_list_update_delete(client: TestClient) -> None:
    created = client.post("/v1/models", json=GPT, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "acme-large"
    assert created.json()["status"] == "active"

    assert client.get("/v1/models/acme-large").json()["output_usd_per_mtok"] == 15.0
    assert "acme-large" in [m["name"] for m in client.get("/v1/models").json()]

    patched = client.patch(
        "/v1/models/acme-large", json={"output_usd_per_mtok": 10.0, "status": "disabled"}, headers=ADMIN
    )
    assert patched.status_code == 200
    assert (patched.json()["output_usd_per_mtok"], patched.json()["status"]) == (10.0, "disabled")
    assert patched.json()["input_usd_per_mtok"] == 3.0

    assert client.delete("/v1/models/acme-large", headers=ADMIN).status_code == 204
    assert client.get("/v1/models/acme-large").status_code == 404


def test_model_names_with_slashes_work(client: TestClient) -> None:
    assert client.post("/v1/models", json={"name": "org/model-7b"}, headers=ADMIN).status_code == 201
    assert client.get("/v1/models/org/model-7b").json()["name"] == "org/model-7b"
    assert client.delete("/v1/models/org/model-7b", headers=ADMIN).status_code == 204


def test_duplicate_is_409(client: TestClient) -> None:
    assert client.post("/v1/models", json=GPT, headers=ADMIN).status_code == 201
    duplicate = client.post("/v1/models", json=GPT, headers=ADMIN)
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["detail"]


def test_unknown_model_is_404_everywhere(client: TestClient) -> None:
    assert client.get("/v1/models/nope").status_code == 404
    assert client.patch("/v1/models/nope", json={"provider": "x"}, headers=ADMIN).status_code == 404
    assert client.delete("/v1/models/nope", headers=ADMIN).status_code == 404
    evaluations = {"evaluations": [{"text": "What is 2+2?", "score": 1}]}
    response = client.post("/v1/models/nope/evaluations", json=evaluations, headers=ADMIN)
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


def test_bad_input_is_422_naming_the_field(client: TestClient) -> None:
    cases = [
        ({**GPT, "input_usd_per_mtok": -1}, "input_usd_per_mtok"),
        ({**GPT, "name": ""}, "name"),
        ({**GPT, "status": "sleeping"}, "status"),
        ({**GPT, "colour": "blue"}, "colour"),
        ({**GPT, "evaluations": [{"text": "q", "score": 2}]}, "evaluations[0].score"),
        ({**GPT, "evaluations": [{"score": 1}]}, "evaluations[0]"),
    ]
    for body, field in cases:
        response = client.post("/v1/models", json=body, headers=ADMIN)
        assert response.status_code == 422, body
        assert field in [e["field"] for e in response.json()["errors"]], response.json()


def test_writes_need_the_admin_key(client: TestClient) -> None:
    assert client.post("/v1/models", json=GPT).status_code == 401
    assert client.post("/v1/models", json=GPT, headers={"X-Admin-Key": "wrong"}).status_code == 401
    bearer = {"Authorization": f"Bearer {ADMIN['X-Admin-Key']}"}
    assert client.post("/v1/models", json=GPT, headers=bearer).status_code == 201


def test_bulk_evaluations_build_a_profile(client: TestClient) -> None:
    assert client.post("/v1/models", json=GPT, headers=ADMIN).status_code == 201
    evaluations = [
        {"text": "Write a Python function that merges two sorted lists.", "score": 1, "cost_usd": 0.002},
        {"text": "Implement quicksort in C.", "score": 1, "output_tokens": 300},
        {"text": "Translate 'good morning' into French.", "score": 0},
    ]
    response = client.post("/v1/models/acme-large/evaluations", json={"evaluations": evaluations}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["written"] == 3
    model = client.get("/v1/models/acme-large").json()
    assert model["evaluations"] == 3
    assert model["typical_output_tokens"] == 300
    # sending the same outcomes again replaces them rather than adding duplicates
    client.post("/v1/models/acme-large/evaluations", json={"evaluations": evaluations}, headers=ADMIN)
    assert client.get("/v1/models/acme-large").json()["evaluations"] == 3


def test_evaluation_on_an_unknown_stored_query_is_422(client: TestClient) -> None:
    client.post("/v1/models", json=GPT, headers=ADMIN)
    body = {"evaluations": [{"benchmark": "mmlu_pro", "query_id": "does-not-exist", "score": 1}]}
    response = client.post("/v1/models/acme-large/evaluations", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert "evaluations[0].query_id" in response.json()["detail"]
