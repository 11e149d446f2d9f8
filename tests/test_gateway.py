"""The OpenAI-compatible gateway, driven by the real `openai` client against capprof and a real loopback upstream.

capprof runs under uvicorn on a database of its own (its request threads cannot share the single-connection test
transaction); the upstream is tests/fake_upstream.py, also on loopback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from profiling.embedding_cache import CachedEmbedder
from service.app import create_app
from service.gateway.upstream import Usage
from service.registry.importer import import_data
from service.runtime import Runtime, upgrade_database
from service.store.orm import RoutingDecision
from tests.conftest import ADMIN, ThrowawayDatabases, csv_rows, make_settings, memory_store, shared_family, small_family
from tests.fake_upstream import BAD_REQUEST, COMPLETION_TOKENS, PROMPT_TOKENS, UpstreamLog, make_upstream, serve
from tests.operating import new_key

SECRET = "sk-upstream-secret-7f3a9c"
KEY_ENV = "TEST_UPSTREAM_KEY"
PRICES = {"input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0}
# name -> (upstream model, score on every imported query, input price): the fallback tests pick two candidates,
# a failing one that ranks first (right on everything) and "m-good", which ranks after it.
MODELS = {
    "m-good": ("plain", 0.5, 2.0),
    "m-broken": ("fail500", 1.0, 0.1),
    "m-busy": ("busy429", 1.0, 0.1),
    "m-slow": ("slow", 1.0, 0.1),
    "m-gated": ("gated", 0.5, 2.0),
}


@dataclass
class Gateway:
    client: openai.OpenAI
    base_url: str
    app: FastAPI
    runtime: Runtime
    upstream: UpstreamLog
    key: str  # the application's capprof key (route scope): its OpenAI api_key

    def decision(self, decision_id: str) -> RoutingDecision:
        self.app.state.decision_log.flush()
        with self.runtime.sessions() as session:
            row = session.scalar(select(RoutingDecision).where(RoutingDecision.id == decision_id))
        assert row is not None
        return row


@pytest.fixture(scope="module")
def gateway(
    databases: ThrowawayDatabases, embedder: CachedEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    url = databases.new()
    upgrade_database(url)
    settings = make_settings(tmp, database_url=url, gateway_timeout_s=1.0, gateway_max_fallbacks=2)
    runtime = Runtime(settings, embedder=embedder, store=memory_store(embedder))
    family = small_family(tmp, shared_family("zeroeval"), 60)
    with runtime.transaction() as session:
        import_data(session, runtime.store, runtime.embedder, runtime.settings, family, progress=False)
    query_ids = [q["query_id"] for q in csv_rows(family / "queries.csv.gz")]
    upstream_log = UpstreamLog()
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, SECRET)
    with serve(make_upstream(upstream_log)) as upstream_url:
        app = create_app(runtime=runtime)
        with serve(app) as base_url:
            admin = httpx.Client(base_url=base_url, headers=ADMIN)
            for name, (upstream_model, score, price) in MODELS.items():
                body = {
                    "name": name,
                    "input_usd_per_mtok": price,
                    "output_usd_per_mtok": PRICES["output_usd_per_mtok"],
                    "endpoint_url": f"{upstream_url}/v1",
                    "upstream_model": upstream_model,
                    "api_key_env": KEY_ENV,
                    "evaluations": [
                        {"benchmark": "zeroeval", "query_id": q, "score": score if score == 1.0 else float(i % 2)}
                        for i, q in enumerate(query_ids)
                    ],
                }
                response = admin.post("/v1/models", json=body)
                assert response.status_code == 201, response.text
            created = admin.post("/admin/keys", json={"name": "gateway-app", "scope": "route"})
            assert created.status_code == 201, created.text
            key = created.json()["key"]
            client = openai.OpenAI(base_url=f"{base_url}/openai/v1", api_key=key, max_retries=0, timeout=30)
            yield Gateway(client, base_url, app, runtime, upstream_log, key)
    mp.undo()


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def test_models_list_auto_and_the_models_with_an_upstream(gateway: Gateway) -> None:
    ids = [m.id for m in gateway.client.models.list()]
    assert ids[0] == "auto"
    assert set(ids[1:]) == set(MODELS)  # the imported zeroeval models have no upstream


def test_a_plain_answer_through_a_named_model_with_its_actual_cost(gateway: Gateway) -> None:
    raw = gateway.client.chat.completions.with_raw_response.create(model="m-good", messages=_ask("What is 2 + 2?"))
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: What is 2 + 2?"
    assert completion.usage is not None and completion.usage.completion_tokens == COMPLETION_TOKENS
    assert raw.headers["x-capprof-model"] == "m-good"
    assert raw.headers["x-capprof-fallbacks"] == "0"
    seen = gateway.upstream.seen[-1]
    assert seen["model"] == "plain"  # forwarded with the upstream's own model name
    assert seen["authorization"] == f"Bearer {SECRET}"  # the upstream key, not the caller's capprof key

    row = gateway.decision(raw.headers["x-capprof-decision-id"])
    assert row.served_model == "m-good" and row.fallbacks == 0
    assert (row.prompt_tokens, row.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    expected = (PROMPT_TOKENS * 2.0 + COMPLETION_TOKENS * PRICES["output_usd_per_mtok"]) / 1e6
    assert row.actual_cost_usd == pytest.approx(expected)


def test_auto_routes_among_models_with_an_upstream(gateway: Gateway) -> None:
    raw = gateway.client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[
            {"role": "user", "content": "Natalia sold 48 clips in April and half as many in May."},
            {"role": "assistant", "content": "She sold 24 in May."},
            {"role": "user", "content": "How many clips did she sell altogether?"},
        ],
        extra_body={"capprof": {"lambda": 0.0, "candidates": ["m-good", "m-gated"]}},
    )
    served = raw.headers["x-capprof-model"]
    assert served in {"m-good", "m-gated"}
    row = gateway.decision(raw.headers["x-capprof-decision-id"])
    assert row.chosen_model == served == row.served_model
    assert {c["model"] for c in row.candidates} <= {"m-good", "m-gated"}
    assert row.actual_cost_usd is not None and row.actual_cost_usd > 0
    assert raw.parse().choices[0].message.content == "echo: How many clips did she sell altogether?"


def test_a_stream_arrives_chunk_by_chunk_before_the_upstream_finishes(gateway: Gateway) -> None:
    gateway.upstream.gate.clear()
    stream = gateway.client.chat.completions.create(model="m-gated", messages=_ask("one two three four"), stream=True)
    pieces: list[str] = []
    for chunk in stream:
        if not pieces:
            # the upstream holds the rest of its answer until this first chunk has reached the client
            gateway.upstream.gate.set()
        assert chunk.choices, "the usage-only chunk the gateway asked for must not reach a caller who did not"
        pieces.append(chunk.choices[0].delta.content or "")
    assert gateway.upstream.gate_opened_in_time is True
    assert "".join(pieces) == "echo: one two three four"
    assert len([p for p in pieces if p]) == 5


def test_a_stream_ends_with_done_and_records_its_cost(gateway: Gateway) -> None:
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/openai/v1/chat/completions",
        json={"model": "m-good", "messages": _ask("a b c"), "stream": True, "stream_options": {"include_usage": True}},
        headers={"Authorization": f"Bearer {gateway.key}"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data:")]
        decision_id = response.headers["x-capprof-decision-id"]
    assert events[-1] == "data: [DONE]"
    assert any('"usage"' in e for e in events)  # asked for, so passed through
    row = gateway.decision(decision_id)
    assert row.served_model == "m-good" and row.completion_tokens == COMPLETION_TOKENS
    assert row.actual_cost_usd == pytest.approx((PROMPT_TOKENS * 2.0 + COMPLETION_TOKENS * 8.0) / 1e6)


@pytest.mark.parametrize("failing", ["m-broken", "m-busy", "m-slow"])
def test_a_failing_upstream_falls_back_to_the_next_alternative(gateway: Gateway, failing: str) -> None:
    for stream in (False, True):
        raw = gateway.client.chat.completions.with_raw_response.create(
            model="auto",
            messages=_ask("What is 6 times 7?"),
            stream=stream,
            extra_body={"capprof": {"candidates": [failing, "m-good"]}},
        )
        assert raw.headers["x-capprof-model"] == "m-good"
        assert raw.headers["x-capprof-fallbacks"] == "1"
        parsed = raw.parse()
        text = (
            "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
            if stream
            else parsed.choices[0].message.content
        )
        assert text == "echo: What is 6 times 7?"
        row = gateway.decision(raw.headers["x-capprof-decision-id"])
        assert row.chosen_model == failing, "the failing model ranked first, so the fallback was really taken"
        assert row.served_model == "m-good" and row.fallbacks == 1
        assert row.actual_cost_usd is not None
    metrics = httpx.get(f"{gateway.base_url}/metrics").text
    assert f'capprof_gateway_upstream_failures_total{{model="{failing}"' in metrics


def test_every_upstream_failing_is_a_502_that_names_them(gateway: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.client.chat.completions.create(
            model="auto", messages=_ask("hi"), extra_body={"capprof": {"candidates": ["m-broken", "m-busy"]}}
        )
    assert caught.value.status_code == 502
    assert "m-broken: HTTP 500" in str(caught.value.body) and "m-busy: HTTP 429" in str(caught.value.body)
    row = gateway.decision(caught.value.response.headers["x-capprof-decision-id"])
    assert row.served_model is None and row.fallbacks == 2 and row.actual_cost_usd is None


def test_a_request_caused_400_is_returned_unchanged_without_fallback(gateway: Gateway) -> None:
    before = len(gateway.upstream.seen)
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client.chat.completions.create(
            model="auto",
            messages=_ask("hi"),
            temperature=3,
            extra_body={"capprof": {"candidates": ["m-good", "m-gated"]}},
        )
    assert caught.value.status_code == 400
    assert caught.value.body == BAD_REQUEST["error"]
    assert caught.value.response.json() == BAD_REQUEST
    assert len(gateway.upstream.seen) == before + 1, "a request-caused 4xx must not be retried elsewhere"


def test_bad_gateway_requests_are_clear_4xx(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        gateway.client.chat.completions.create(model="no-such-model", messages=_ask("hi"))
    assert "no-such-model" in unknown.value.message
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        gateway.client.chat.completions.create(
            model="auto", messages=_ask("hi"), extra_body={"capprof": {"lambda": -1}}
        )
    assert "capprof.lambda" in str(bad.value.body)
    with pytest.raises(openai.UnprocessableEntityError) as typo:
        gateway.client.chat.completions.create(
            model="auto", messages=_ask("hi"), extra_body={"capprof": {"candidates": ["m-goood"]}}
        )
    assert "m-goood" in str(typo.value.body)
    no_messages = httpx.post(f"{gateway.base_url}/openai/v1/chat/completions", json={"model": "auto", "messages": []})
    assert no_messages.status_code == 422 and "messages" in no_messages.json()["detail"]


def test_the_upstream_key_is_never_returned_or_logged(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    for model in ("m-good", "m-broken"):
        raw = gateway.client.chat.completions.with_raw_response.create(
            model="auto", messages=_ask("hello"), extra_body={"capprof": {"candidates": [model, "m-good"]}}
        )
        texts += [raw.text, str(dict(raw.headers))]
    with pytest.raises(openai.APIStatusError) as failed:
        gateway.client.chat.completions.create(
            model="auto", messages=_ask("x"), extra_body={"capprof": {"candidates": ["m-broken"]}}
        )
    texts.append(failed.value.response.text)
    admin = httpx.Client(base_url=gateway.base_url, headers=ADMIN)
    texts += [admin.get("/v1/models/m-good").text, admin.get("/v1/models").text]
    assert admin.get("/v1/models/m-good").json()["api_key_env"] == KEY_ENV
    out, err = capfd.readouterr()
    texts += [caplog.text, out, err]
    assert any(gateway.upstream.seen), "the upstream was really called with the key"
    for text in texts:
        assert SECRET not in text
    assert all(gateway.key not in (s["authorization"] or "") for s in gateway.upstream.seen)


@pytest.mark.parametrize("model", ["auto", "m-good"])
@pytest.mark.parametrize("content", ["a\u0000b", [{"type": "text", "text": "a\ud800b"}]])
def test_text_no_database_can_store_is_a_422_before_any_upstream_call(
    gateway: Gateway, model: str, content: object
) -> None:
    calls = len(gateway.upstream.seen)
    body = {
        "model": model,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}],
    }
    refused = httpx.post(
        f"{gateway.base_url}/openai/v1/chat/completions",
        content=json.dumps(body).encode(),  # json.dumps escapes the lone surrogate as JSON allows
        headers={"authorization": f"Bearer {gateway.key}", "content-type": "application/json"},
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["param"] == "messages[1].content"
    assert len(gateway.upstream.seen) == calls


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": float("nan")}, "temperature"),
        ({"logit_bias": {"50256": float("-inf")}}, "logit_bias.50256"),
        ({"stop": ["a"], "extra_body": {"weights": [1.0, float("inf")]}}, "extra_body.weights[1]"),
    ],
)
def test_a_forwarded_nan_or_infinity_is_a_422_before_any_upstream_call(
    gateway: Gateway, extra: dict[str, object], param: str
) -> None:
    """Python's JSON reads NaN and Infinity and would write them on to the upstream, which cannot parse them."""
    calls = len(gateway.upstream.seen)
    body = {"model": "m-good", "messages": [{"role": "user", "content": "Hi"}], **extra}
    refused = httpx.post(
        f"{gateway.base_url}/openai/v1/chat/completions",
        content=json.dumps(body).encode(),  # json.dumps writes NaN and Infinity as Python's json reads them
        headers={"authorization": f"Bearer {gateway.key}", "content-type": "application/json"},
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["param"] == param
    assert "finite" in refused.json()["detail"]
    assert len(gateway.upstream.seen) == calls
    fine = httpx.post(
        f"{gateway.base_url}/openai/v1/chat/completions",
        json={"model": "m-good", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.2},
        headers={"authorization": f"Bearer {gateway.key}"},
    )
    assert fine.status_code == 200, fine.text


def test_gateway_options_name_their_field_and_refuse_non_finite_numbers(gateway: Gateway) -> None:
    url, headers = f"{gateway.base_url}/openai/v1/chat/completions", {"authorization": f"Bearer {gateway.key}"}
    both = httpx.post(
        url,
        json={"model": "auto", "messages": _ask("hi"), "capprof": {"lambda": 0.1, "preset": "economy"}},
        headers=headers,
    )
    assert both.status_code == 422 and both.json()["detail"].startswith("capprof")
    infinite = httpx.post(
        url,
        content=b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "capprof": {"max_cost": Infinity}}',
        headers=headers | {"content-type": "application/json"},
    )
    assert infinite.status_code == 422 and "max_cost" in infinite.text


def test_a_named_model_counts_against_the_key_s_budget(gateway: Gateway) -> None:
    key = new_key(gateway.runtime, "tiny-budget", "route", monthly_budget_usd=1e-9)
    client = openai.OpenAI(base_url=f"{gateway.base_url}/openai/v1", api_key=key, max_retries=0, timeout=30)
    first = client.chat.completions.with_raw_response.create(model="m-good", messages=_ask("What is 2 + 2?"))
    assert gateway.decision(first.headers["x-capprof-decision-id"]).actual_cost_usd  # a cost above the budget
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m-good", messages=_ask("What is 3 + 3?"))


def test_implausible_upstream_usage_is_not_taken_as_a_cost() -> None:
    usage = Usage()
    assert usage.read({"usage": {"prompt_tokens": -1_000_000_000, "completion_tokens": 1e300}})
    assert (usage.prompt_tokens, usage.completion_tokens) == (None, None)
    assert usage.read({"usage": {"prompt_tokens": 12.0, "completion_tokens": True}})
    assert (usage.prompt_tokens, usage.completion_tokens) == (12, None)
