"""The contract is the schema (issue 10): schemathesis drives every operation from /openapi.json against the app
itself (ASGI, in-process, no network) with all of its checks on, with the admin key so admin routes are exercised.

Bounded and deterministic: 25 examples per operation, derandomized, no example database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.core.transport import Response
from schemathesis.generation.modes import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy.orm import Session, sessionmaker

from profiling.embedding_cache import CachedEmbedder
from service.app import create_app
from service.runtime import Runtime
from tests.conftest import ADMIN, make_settings, memory_store

SEED_MODELS = [
    {
        "name": "acme-large",
        "provider": "acme",
        "input_usd_per_mtok": 3.0,
        "output_usd_per_mtok": 15.0,
        "evaluations": [
            {"text": "Write a Python function that merges two sorted lists.", "score": 1, "output_tokens": 300},
            {"text": "Translate 'good morning' into French.", "score": 1, "cost_usd": 0.002},
        ],
    },
    {"name": "acme-small", "provider": "acme", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2},
]


@pytest.fixture
def api_schema(
    embedder: CachedEmbedder, session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[schemathesis.BaseSchema]:
    runtime = Runtime(
        # keys required: the schema declares every protected operation's security, and schemathesis checks it
        make_settings(tmp_path, require_keys=True),
        embedder=embedder,
        session_factory=session_factory,
        store=memory_store(embedder),
    )
    app = create_app(runtime=runtime)
    seeding = TestClient(app)  # no lifespan: schemathesis runs the app's lifespan itself
    for body in SEED_MODELS:
        assert seeding.post("/v1/models", json=body, headers=ADMIN).status_code == 201
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    asgi.shutdown_lifespans()


# A schema cannot know what is stored: a body naming a query id, a candidate model, a preset not yet calibrated (no
# stored operating point) or an item that does not exist is well formed yet refused (422 naming that field). Only
# such refusals are exempt from "valid data is accepted".
REFERENCE_FIELDS = re.compile(r"(query_id|candidates|item_id|preset|candidates/max_cost/exclude_\*)$")


# Nor can it say that one parameter must come after another: a report range whose end is not after its start is
# refused (422 naming `to`) however well formed each bound is.
CROSS_FIELD_RULES = {("to", "must be after from")}


def _refused_beyond_what_a_schema_says(response: Response) -> bool:
    if response.status_code != 422:
        return False
    errors = response.json().get("errors", [])
    return bool(errors) and all(
        REFERENCE_FIELDS.search(e["field"]) or (e["field"], e["problem"]) in CROSS_FIELD_RULES for e in errors
    )


def _has_inputs(operation: schemathesis.APIOperation) -> bool:
    return any(len(group) for group in (operation.path_parameters, operation.headers, operation.query, operation.body))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_every_operation_keeps_its_schema(api_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    """Valid data is accepted, invalid data refused with a documented 4xx; every status, header and body is the
    documented one; admin operations refuse a missing or wrong key; nothing answers 5xx."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 14
    failures: list[str] = []
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
            continue  # nothing to get wrong: no parameter, no body

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
        )
        def exercise(case: schemathesis.Case) -> None:
            response = case.call(headers=ADMIN)
            excluded = [positive_data_acceptance] if _refused_beyond_what_a_schema_says(response) else []
            case.validate_response(response, headers=ADMIN, excluded_checks=excluded)

        try:
            exercise()
        except BaseException as exc:  # every operation is tried; all failures are reported together
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            failures.append(f"{operation.label} ({mode.value} data):\n{exc}")
    assert not failures, "\n\n".join(failures)


def test_docs_are_served_offline(client: TestClient) -> None:
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = client.get(page)
        assert html.status_code == 200
        assert "cdn." not in html.text and "https://" not in html.text.split("<body")[1], page
        local = re.search(r'src="([^"]*' + re.escape(asset) + ')"', html.text)
        assert local is not None and local.group(1).startswith("/"), page
        script = client.get(local.group(1))
        assert script.status_code == 200 and len(script.content) > 100_000, asset


def test_the_schema_documents_errors_keys_and_the_query_rule(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    error = spec["components"]["schemas"]["ValidationErrorOut"]
    assert set(error["required"]) == {"detail", "errors"}
    assert set(spec["components"]["securitySchemes"]) == {"AdminKey", "Bearer"}
    create = spec["paths"]["/v1/models"]["post"]
    assert {"201", "401", "409", "422", "503"} <= set(create["responses"])
    assert create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ValidationErrorOut")
    assert {"AdminKey": []} in create["security"] and {"Bearer": []} in create["security"]
    route_operation = spec["paths"]["/v1/route"]["post"]  # a route-scope key, required where keys are required
    assert {"Bearer": []} in route_operation["security"]
    assert {"401", "403", "422", "429", "503"} <= set(route_operation["responses"])
    route = spec["components"]["schemas"]["RouteRequest"]
    assert route["oneOf"] == [{"required": ["query"]}, {"required": ["messages"]}]
    assert route["not"]["required"] == ["lambda", "preset"]  # lambda or preset, not both
    undocumented = [  # a protected operation's key can be missing or wrong (401) or too small in scope (403)
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") and not {"401", "403"} <= set(operation["responses"])
    ]
    assert not undocumented, undocumented
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_timestamps_carry_their_offset(client: TestClient) -> None:
    """SQLite returns naive timestamps; the schema promises RFC 3339 date-times."""
    assert client.post("/v1/models", json={"name": "m"}, headers=ADMIN).status_code == 201
    created = client.get("/v1/models/m").json()["created_at"]
    assert created.endswith("Z") or "+" in created[10:], created
