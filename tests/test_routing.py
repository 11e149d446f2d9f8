"""Routing behaviour on real data: zeroeval imported once for the module, then routed over HTTP."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from profiling.embedding_cache import CachedEmbedder
from service.app import create_app
from service.registry.importer import import_data
from service.runtime import Runtime
from service.store.orm import RoutingDecision
from tests.conftest import csv_rows, make_settings, memory_store, savepoint_sessions, shared_family

CODE_QUERIES = [
    "You are given a Python function and an assertion containing an input to the function. Complete the assertion "
    "with a literal containing the output when executing the code.\n\ndef f(s):\n    out = []\n    for ch in s:\n"
    "        if ch.isdigit():\n            out.append(ch * 2)\n    return ''.join(out)\nassert f('a1b2') == ??",
    "You are given a Python function and an assertion. Complete the assertion with the exact output.\n\n"
    "def f(nums):\n    nums.sort(reverse=True)\n    return nums[1:3]\nassert f([4, 9, 1, 7]) == ??",
]
MATH_QUERIES = [
    "A baker sells 24 muffins in the morning and twice as many in the afternoon. Each muffin costs $3. "
    "How much money does the baker make in total?",
    "Tom reads 15 pages a day for 6 days and then 20 pages a day for 4 days. How many pages does he read?",
]


@pytest.fixture(scope="module")
def zeroeval() -> Path:
    return shared_family("zeroeval")


@pytest.fixture(scope="module")
def routed(
    engine: Engine, embedder: CachedEmbedder, zeroeval: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Runtime]]:
    with engine.connect() as conn:
        outer = conn.begin()
        sessions = savepoint_sessions(conn)
        store = memory_store(embedder)
        settings = make_settings(tmp_path_factory.mktemp("routing"))
        with sessions() as session, session.begin():
            import_data(session, store, embedder, settings, zeroeval, progress=False)
        runtime = Runtime(settings, embedder=embedder, session_factory=sessions, store=store)
        with TestClient(create_app(runtime=runtime)) as client:
            yield client, runtime
        outer.rollback()


@pytest.fixture(scope="module")
def domain_accuracy(zeroeval: Path) -> dict[str, dict[str, float]]:
    domain = {q["query_id"]: q["domain"] for q in csv_rows(zeroeval / "queries.csv.gz")}
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for o in csv_rows(zeroeval / "outcomes.csv.gz"):
        scores[o["model"]][domain[o["query_id"]]].append(float(o["score"]))
    return {m: {d: float(np.mean(v)) for d, v in by.items()} for m, by in scores.items()}


def _route(client: TestClient, **body: object) -> dict:  # type: ignore[type-arg]
    response = client.post("/v1/route", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_code_and_math_go_to_models_strong_there(routed, domain_accuracy) -> None:  # type: ignore[no-untyped-def]
    client, _ = routed
    for domain, queries in (("code", CODE_QUERIES), ("math", MATH_QUERIES)):
        top_quartile = np.quantile([acc[domain] for acc in domain_accuracy.values()], 0.75)
        for query in queries:
            chosen = _route(client, query=query)["model"]
            assert domain_accuracy[chosen][domain] >= top_quartile, (domain, chosen)


def test_a_code_specialist_gets_code_and_a_math_specialist_gets_math(routed, domain_accuracy) -> None:  # type: ignore[no-untyped-def]
    client, _ = routed
    margin, coder, mathematician = max(
        (min(a["code"] - b["code"], b["math"] - a["math"]), ma, mb)
        for ma, a in domain_accuracy.items()
        for mb, b in domain_accuracy.items()
        if ma != mb
    )
    if margin < 0.05:
        pytest.skip("no pair of models with opposite code/math strengths in this data")
    pair = [coder, mathematician]
    for query in CODE_QUERIES:
        assert _route(client, query=query, candidates=pair)["model"] == coder
    for query in MATH_QUERIES:
        assert _route(client, query=query, candidates=pair)["model"] == mathematician


def test_raising_lambda_never_raises_the_expected_cost(routed) -> None:  # type: ignore[no-untyped-def]
    client, _ = routed
    lambdas = [0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3]
    got_cheaper = False
    for query in CODE_QUERIES + MATH_QUERIES:
        costs = [
            _route(client, query=query, **{"lambda": lam})["alternatives"][0]["estimated_cost_usd"] for lam in lambdas
        ]
        assert all(later <= earlier + 1e-15 for earlier, later in zip(costs, costs[1:], strict=False)), costs
        got_cheaper |= costs[-1] < costs[0]
    assert got_cheaper, "lambda never changed any choice"


def test_candidates_and_max_cost_are_respected(routed) -> None:  # type: ignore[no-untyped-def]
    client, _ = routed
    everyone = _route(client, query=MATH_QUERIES[0], top_n=100)["alternatives"]
    pair = [everyone[-1]["model"], everyone[-2]["model"]]
    limited = _route(client, query=MATH_QUERIES[0], candidates=pair, top_n=10)
    assert limited["model"] in pair
    assert {a["model"] for a in limited["alternatives"]} == set(pair)

    budget = float(np.median([a["estimated_cost_usd"] for a in everyone]))
    capped = _route(client, query=MATH_QUERIES[0], max_cost=budget, top_n=100)
    assert capped["alternatives"][0]["estimated_cost_usd"] <= budget
    assert all(a["estimated_cost_usd"] <= budget for a in capped["alternatives"])
    assert capped["model"] != everyone[0]["model"] or everyone[0]["estimated_cost_usd"] <= budget

    excluded = _route(client, query=MATH_QUERIES[0], exclude_models=[everyone[0]["model"]])
    assert excluded["model"] != everyone[0]["model"]

    # providers come from models.csv at import, so excluding the chosen model's provider removes all its models
    provider = {m["name"]: m["provider"] for m in client.get("/v1/models").json()}
    top_provider = provider[everyone[0]["model"]]
    assert top_provider
    without = _route(client, query=MATH_QUERIES[0], exclude_providers=[top_provider], top_n=100)["alternatives"]
    assert without and all(provider[a["model"]] != top_provider for a in without)
    assert len(without) == len(everyone) - sum(p == top_provider for p in provider.values())
    shouted = _route(client, query=MATH_QUERIES[0], exclude_providers=[top_provider.upper()], top_n=100)
    assert [a["model"] for a in shouted["alternatives"]] == [a["model"] for a in without]  # case does not matter

    impossible = client.post("/v1/route", json={"query": MATH_QUERIES[0], "max_cost": 1e-12})
    assert impossible.status_code == 422
    assert "max_cost" in impossible.json()["detail"]


def test_messages_keep_the_context_of_earlier_turns(routed) -> None:  # type: ignore[no-untyped-def]
    client, _ = routed
    follow_up = "Can you make it shorter and faster?"
    alone = _route(client, query=follow_up)
    chat = _route(
        client,
        messages=[
            {"role": "user", "content": "Write a Python function that returns the prime numbers below n."},
            {
                "role": "assistant",
                "content": "def primes(n):\n    return [p for p in range(2, n) if all(p % d for d in range(2, p))]",
            },
            {"role": "user", "content": follow_up},
        ],
    )

    def coding_weight(decision: dict) -> float:  # type: ignore[type-arg]
        return next((c["weight"] for c in decision["profile"]["capabilities"] if c["name"] == "coding"), 0.0)

    assert coding_weight(chat) > coding_weight(alone)
    assert chat["profile"]["capabilities"][0]["name"] == "coding"


def test_batch_routing_matches_one_by_one(routed) -> None:  # type: ignore[no-untyped-def]
    client, _ = routed
    requests = [{"query": q, "lambda": lam, "top_n": 4} for q in CODE_QUERIES + MATH_QUERIES for lam in (0, 0.1)]
    batch = client.post("/v1/route/batch", json={"requests": requests})
    assert batch.status_code == 200, batch.text
    for request, decided in zip(requests, batch.json()["decisions"], strict=True):
        single = _route(client, **request)
        assert decided["model"] == single["model"]
        assert [a["model"] for a in decided["alternatives"]] == [a["model"] for a in single["alternatives"]]
        np.testing.assert_allclose(
            [a["p_correct"] for a in decided["alternatives"]],
            [a["p_correct"] for a in single["alternatives"]],
            atol=1e-5,
        )


def test_batch_size_is_capped(routed) -> None:  # type: ignore[no-untyped-def]
    client, runtime = routed
    too_many = [{"query": "hello"}] * (runtime.settings.route_batch_max + 1)
    response = client.post("/v1/route/batch", json={"requests": too_many})
    assert response.status_code == 422
    assert "requests" in response.json()["detail"]


def test_domains_are_readable_and_a_query_far_from_them_gets_none(routed) -> None:  # type: ignore[no-untyped-def]
    client, _ = routed
    loaded = {d["name"] for d in client.get("/v1/dimensions").json() if d["kind"] == "domain"}
    assert "grade school math word problems" in loaded and "gsm" not in loaded
    math = _route(client, query=MATH_QUERIES[0])["profile"]["domains"]
    assert math and math[0]["name"] in {"mathematics", "grade school math word problems", "competition mathematics"}
    # with only math and code data loaded, history is not pushed into math or code
    history = _route(client, query="Which treaty ended the Thirty Years War?")["profile"]["domains"]
    zeroeval_topics = {"mathematics", "grade school math word problems", "competition mathematics", "programming"}
    assert not {d["name"] for d in history} & (zeroeval_topics | {"code execution reasoning"})
    for everyday in ("Hello! How are you today?", "What should I cook for dinner tonight with chicken and rice?"):
        assert _route(client, query=everyday)["profile"]["domains"] == [], everyday


def test_explain_splits_the_score(routed) -> None:  # type: ignore[no-untyped-def]
    client, _ = routed
    decision = _route(client, query=CODE_QUERIES[0], explain=True, **{"lambda": 0.05})
    best = decision["alternatives"][0]
    parts = decision["contributions"][best["model"]]
    assert parts["dimensions"], "no per-dimension contribution"
    total = (
        sum(parts["dimensions"].values())
        + parts["knn"]
        + parts["head"]
        + parts["reranker"]
        + parts["cost"]
        + parts["calibration"]
    )
    assert total == pytest.approx(best["score"], abs=1e-6)


def test_every_decision_is_logged(routed) -> None:  # type: ignore[no-untyped-def]
    client, runtime = routed
    decision = client.post("/v1/route", json={"query": MATH_QUERIES[1]}, headers={"X-Caller": "billing-team"}).json()
    assert client.app.state.decision_log.flush() >= 1  # type: ignore[attr-defined]
    with runtime.sessions() as session:
        row = session.scalar(select(RoutingDecision).where(RoutingDecision.id == decision["decision_id"]))
    assert row is not None
    assert (row.chosen_model, row.caller, row.caller_label) == (decision["model"], None, "billing-team")
    assert row.candidates[0]["model"] == decision["model"]


def test_bad_route_requests_name_the_field(routed) -> None:  # type: ignore[no-untyped-def]
    client, _ = routed
    cases = [
        ({}, "body"),
        ({"query": "x", "messages": [{"role": "user", "content": "y"}]}, "body"),
        ({"query": "x", "lambda": -1}, "lambda"),
        ({"query": "x", "top_n": 0}, "top_n"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"query": "   "}, "query"),
    ]
    for body, field in cases:
        response = client.post("/v1/route", json=body)
        assert response.status_code == 422, body
        assert field in [e["field"] for e in response.json()["errors"]], response.json()


def test_unknown_candidates_are_named(routed) -> None:  # type: ignore[no-untyped-def]
    client, _ = routed
    response = client.post("/v1/route", json={"query": MATH_QUERIES[0], "candidates": ["no-such-model"]})
    assert response.status_code == 422
    assert "candidates" in response.json()["detail"] and "no-such-model" in response.json()["detail"]
