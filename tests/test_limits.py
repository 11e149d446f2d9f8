"""Limits against overload (issue 10, item 2): body size, chat and batch sizes, text length, rate, fair embedding."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Message, Receive, Scope, Send

from profiling.embedder import Vectors, estimate_tokens, plan_batches
from profiling.embedding_cache import CachedEmbedder
from service.api.limits import BodyLimit, TokenBuckets, caller_identity
from service.app import create_app
from service.registry.importer import import_data
from service.routing.microbatch import MicroBatcher
from service.runtime import Runtime
from service.store.vector_store import VectorStore
from tests.conftest import make_settings, shared_family, small_family


def _client(
    tmp: Path,
    embedder: CachedEmbedder,
    session_factory: sessionmaker[Session],
    store: VectorStore,
    with_data: bool = True,
    **overrides: object,
) -> TestClient:
    settings = make_settings(tmp, **overrides)
    if with_data:
        family = small_family(tmp / "family", shared_family("zeroeval"), 30)
        with session_factory() as session, session.begin():
            import_data(session, store, embedder, settings, family, progress=False)
    runtime = Runtime(settings, embedder=embedder, session_factory=session_factory, store=store)
    return TestClient(create_app(runtime=runtime))


@pytest.fixture
def limited(
    tmp_path: Path, embedder: CachedEmbedder, session_factory: sessionmaker[Session], store: VectorStore
) -> Iterator[TestClient]:
    with _client(
        tmp_path, embedder, session_factory, store, max_messages=3, max_text_chars=200, max_batch_texts=4
    ) as client:
        yield client


def _fields(response: object) -> list[str]:
    body = response.json()  # type: ignore[attr-defined]
    return [e["field"] for e in body["errors"]]


def test_too_many_messages_are_refused_before_embedding(limited: TestClient) -> None:
    messages = [{"role": "user", "content": f"turn {i}"} for i in range(4)]
    response = limited.post("/v1/route", json={"messages": messages})
    assert response.status_code == 422
    assert _fields(response) == ["messages"]
    assert "at most 3 messages" in response.json()["detail"]
    assert limited.app.state.batcher.texts == 0  # type: ignore[attr-defined]


def test_too_many_texts_in_a_batch_are_refused(limited: TestClient) -> None:
    requests = [{"query": f"what is {i} + {i}?"} for i in range(3)] + [
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    ]
    response = limited.post("/v1/route/batch", json={"requests": requests})
    assert response.status_code == 422
    assert _fields(response) == ["requests"]
    assert "at most 4 texts" in response.json()["detail"]
    chat = [{"role": "user", "content": str(i)} for i in range(4)]
    response = limited.post("/v1/route/batch", json={"requests": [{"query": "x"}, {"messages": chat}]})
    assert response.status_code == 422 and _fields(response) == ["requests[1].messages"]


def test_a_long_text_is_truncated_and_the_response_says_so(limited: TestClient) -> None:
    long = "Solve for x: 3x + 7 = 22. " * 40
    response = limited.post("/v1/route", json={"query": long})
    assert response.status_code == 200, response.text
    assert response.json()["truncated"] == ["query"]
    short = limited.post("/v1/route", json={"query": "Solve for x: 3x + 7 = 22."})
    assert short.json()["truncated"] == []
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": long}]}
    batch = limited.post("/v1/route/batch", json={"requests": [{"query": "2+2?"}, chat]})
    assert batch.status_code == 200
    assert [d["truncated"] for d in batch.json()["decisions"]] == [[], ["requests[1].messages[1].content"]]


def test_a_long_text_is_refused_when_so_configured(
    tmp_path: Path, embedder: CachedEmbedder, session_factory: sessionmaker[Session], store: VectorStore
) -> None:
    with _client(
        tmp_path, embedder, session_factory, store, with_data=False, max_text_chars=100, text_overflow="refuse"
    ) as client:
        chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "y" * 101}]}
        response = client.post("/v1/route", json=chat)
        assert response.status_code == 422
        assert _fields(response) == ["messages[1].content"]
        assert "longer than 100 characters" in response.json()["detail"]


def test_a_declared_large_body_gets_413_without_being_read(
    tmp_path: Path, embedder: CachedEmbedder, session_factory: sessionmaker[Session], store: VectorStore
) -> None:
    with _client(tmp_path, embedder, session_factory, store, with_data=False, max_body_bytes=4096) as client:
        response = client.post("/v1/route", json={"query": "x" * 5000})
        assert response.status_code == 413
        assert "body" in response.json()["detail"]
        assert client.post("/v1/route", json={"query": "x" * 100}).status_code != 413


def test_a_streamed_body_is_cut_off_as_soon_as_it_passes_the_limit() -> None:
    """No Content-Length (chunked): the middleware stops after the chunk that crosses the limit."""
    chunks = [b"x" * 10_000] * 100
    reads = 0
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):  # an app that reads the whole body
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": chunks[reads - 1], "more_body": reads < len(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/route", "headers": []}
    asyncio.run(BodyLimit(app, max_bytes=50_000)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert reads == 6  # 60,000 bytes read of 1,000,000


def test_rate_limit_answers_429_with_retry_after_per_caller(
    tmp_path: Path, embedder: CachedEmbedder, session_factory: sessionmaker[Session], store: VectorStore
) -> None:
    with _client(
        tmp_path, embedder, session_factory, store, with_data=False, rate_limit_per_s=0.5, rate_limit_burst=2
    ) as client:
        assert [client.get("/v1/models").status_code for _ in range(2)] == [200, 200]
        refused = client.get("/v1/models")
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert "rate limit" in refused.json()["detail"]
        other = {"X-Admin-Key": "test-admin-key"}  # another caller (a key): its own bucket
        assert client.get("/v1/models", headers=other).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes are never limited
        assert client.head("/healthz").status_code == 200  # a HEAD probe too


def test_token_bucket_refills_at_its_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=2)
    assert buckets.take("a", now=0.0) == 0 and buckets.take("a", now=0.0) == 0
    assert buckets.take("a", now=0.0) == pytest.approx(0.5)
    assert buckets.take("a", now=0.5) == 0  # one token back after 1/rate seconds
    assert buckets.take("b", now=0.5) == 0


def test_caller_identity_hashes_the_key_and_falls_back_to_the_address() -> None:
    keyed: Scope = {"type": "http", "headers": [(b"x-admin-key", b"s3cret")], "client": ("10.0.0.1", 5)}
    bearer: Scope = {"type": "http", "headers": [(b"authorization", b"Bearer s3cret")], "client": ("10.0.0.2", 5)}
    anonymous: Scope = {"type": "http", "headers": [], "client": ("10.0.0.3", 5)}
    assert caller_identity(keyed) == caller_identity(bearer)
    assert "s3cret" not in caller_identity(keyed)
    assert caller_identity(anonymous) == "addr:10.0.0.3"


def test_plan_batches_sorts_by_length_and_caps_padded_tokens() -> None:
    rng = random.Random(0)
    texts = ["w" * rng.choice([5, 40, 300, 2000, 9000]) for _ in range(500)]
    batches = plan_batches(texts, max_padded_tokens=2048, max_texts=64)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        lengths = [estimate_tokens(texts[i]) for i in batch]
        assert len(batch) <= 64
        assert len(batch) * max(lengths) <= 2048
    firsts = [estimate_tokens(texts[b[0]]) for b in batches]
    assert firsts == sorted(firsts)


def test_a_short_query_does_not_wait_for_a_whole_bulk_batch() -> None:
    """While a large batch is embedding, an interactive request is served at the next capped call."""
    calls: list[list[str]] = []
    first_call_running = threading.Event()
    release_first_call = threading.Event()

    def embed(texts: Sequence[str]) -> Vectors:
        calls.append(list(texts))
        if len(calls) == 1:
            first_call_running.set()
            release_first_call.wait(10)
        return np.ones((len(texts), 4), np.float32) * np.array([[len(t)] for t in texts], np.float32)

    async def scenario() -> tuple[Vectors, Vectors]:
        batcher = MicroBatcher(embed, window_ms=0, max_texts=64, max_tokens=4096, bulk_max_tokens=1024)
        await batcher.start()
        bulk_texts = [f"long text {i} " + "z" * (400 + i) for i in range(40)]  # ~140+ tokens each: 7 per call
        bulk = asyncio.create_task(batcher.embed(bulk_texts, bulk=True))
        await asyncio.to_thread(first_call_running.wait, 10)
        short = asyncio.create_task(batcher.embed(["2+2?"]))
        await asyncio.sleep(0.05)
        release_first_call.set()
        vectors = await asyncio.gather(bulk, short)
        await batcher.stop()
        assert vectors[0][:, 0].tolist() == [len(t) for t in bulk_texts]  # order kept across pieces
        one_piece = await batcher.embed(["ccc", "a", "bb"], bulk=True)  # sorted into one call, answered in order
        assert one_piece[:, 0].tolist() == [3, 1, 2]
        return vectors[0], vectors[1]

    asyncio.run(scenario())
    assert calls[1] == ["2+2?"]  # right after the call that was running, before the rest of the batch
    assert len(calls) > 3
    for call in calls[:-1]:
        assert len(call) * max(estimate_tokens(t) for t in call) <= 1024
