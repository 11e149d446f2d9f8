"""`capprof onboard`: the aptitude test run through a loopback upstream that answers a known share correctly."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from profiling.embedding_cache import CachedEmbedder
from service.cli import app as cli
from service.jobs.onboard import onboard
from service.registry.aptitude import build_test
from service.registry.importer import import_data
from service.runtime import Runtime, upgrade_database
from service.store.orm import EvalQuery, LlmModel
from service.store.readers import aptitude_matrix, current_test
from tests.conftest import ADMIN, ThrowawayDatabases, make_settings, shared_family, small_family
from tests.fake_upstream import UpstreamLog, make_upstream, serve


def _right(text: str) -> bool:
    """Which items the fake model gets right: about two in three, fixed by the text."""
    return hashlib.sha256(text.encode()).digest()[0] % 3 != 0


def _reply(gold: str, right: bool) -> str:
    answer = gold if right else "@@no idea@@"
    return "Step by step... " + json.dumps({"reasoning": "worked it out", "answer": answer})


@pytest.fixture
def tested(runtime: Runtime, tmp_path: Path) -> Iterator[tuple[Runtime, dict[int, tuple[str, str]]]]:
    """zeroeval imported, a gradable-only aptitude test built; item id -> (text, gold answer)."""
    family = small_family(tmp_path, shared_family("zeroeval"), 240)
    with runtime.transaction() as session:
        import_data(session, runtime.store, runtime.embedder, runtime.settings, family, progress=False)
        test = build_test(session, runtime.store, gradable_only=True)
        query_of = {item.id: item.query_id for task in test.tasks for item in task.items}
        queries = {q.id: q for q in session.scalars(select(EvalQuery).where(EvalQuery.id.in_(query_of.values())))}
        items = {i: (queries[q].text, queries[q].answer or "") for i, q in query_of.items()}
    assert items and all(gold for _, gold in items.values()), "a gradable-only test holds only items with an answer"
    yield runtime, items


def _register(client: TestClient, name: str, upstream_url: str, price: float) -> None:
    body = {
        "name": name,
        "input_usd_per_mtok": price,
        "output_usd_per_mtok": price,
        "endpoint_url": f"{upstream_url}/v1",
        "upstream_model": "plain",
    }
    assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201


def test_onboarding_yields_exactly_the_share_answered_right_and_resumes(
    tested: tuple[Runtime, dict[int, tuple[str, str]]], client: TestClient
) -> None:
    runtime, items = tested
    answers = {text: _reply(gold, _right(text)) for text, gold in items.values()}
    failing = {text for text, _ in list(items.values())[:7]}
    log = UpstreamLog()
    with serve(make_upstream(log, answers=answers, failing_prompts=failing)) as upstream_url:
        _register(client, "fresh-model", upstream_url, 0.5)
        first = onboard(runtime, "fresh-model", concurrency=4, retries=0, progress=False)
        assert first.failed == len(failing) and first.asked == len(items)
        assert first.recorded == len(items) - len(failing)

        failing.clear()  # the upstream recovers; a second run asks only what is left
        asked_before = len(log.seen)
        second = onboard(runtime, "fresh-model", concurrency=4, retries=0, progress=False)
        assert (second.resumed, second.asked, second.failed) == (len(items) - 7, 7, 0)
        assert len(log.seen) - asked_before == 7

    with runtime.sessions() as session:
        test = current_test(session)
        assert test is not None
        expected = [sum(_right(items[item.id][0]) for item in task.items) / len(task.items) for task in test.tasks]
    assert second.aptitude == pytest.approx(expected)
    assert second.accuracy == pytest.approx(sum(_right(t) for t, _ in items.values()) / len(items))
    assert min(expected) > 0 or max(expected) < 1  # the share is not trivially all or nothing
    assert all(s["model"] == "plain" for s in log.seen)
    assert client.get("/v1/models/fresh-model").json()["evaluations"] == len(items)


def test_an_onboarded_model_is_routed(tested: tuple[Runtime, dict[int, tuple[str, str]]], client: TestClient) -> None:
    runtime, items = tested
    answers = {text: _reply(gold, True) for text, gold in items.values()}
    with serve(make_upstream(UpstreamLog(), answers=answers)) as upstream_url:
        _register(client, "sharp-model", upstream_url, 0.01)
        report = onboard(runtime, "sharp-model", concurrency=8, progress=False)
    assert report.failed == 0 and report.accuracy == 1.0
    assert all(a is None or math.isclose(a, 1.0) for a in report.aptitude)
    runtime.reload_router()
    routed = client.post("/v1/route", json={"query": "Natalia sold 48 clips. How many in total?", "lambda": 0.1})
    assert routed.json()["model"] == "sharp-model"


def test_gold_answers_are_for_admins_only(
    tested: tuple[Runtime, dict[int, tuple[str, str]]], client: TestClient
) -> None:
    _, items = tested
    public = client.get("/v1/aptitude")
    assert public.status_code == 200
    assert "answer" not in {k for t in public.json()["tasks"] for i in t["items"] for k in i}
    assert client.get("/v1/aptitude/answers").status_code == 401
    gold = client.get("/v1/aptitude/answers", headers=ADMIN).json()
    assert {a["item_id"]: a["answer"] for a in gold["answers"]} == {i: g for i, (_, g) in items.items()}
    assert all(a["gradable"] for a in gold["answers"])


def test_onboarding_refuses_a_model_without_an_upstream(
    tested: tuple[Runtime, dict[int, tuple[str, str]]], client: TestClient
) -> None:
    from service.errors import NotFoundError

    runtime, _ = tested
    client.post("/v1/models", json={"name": "no-upstream"}, headers=ADMIN)
    with pytest.raises(NotFoundError, match="no upstream"):
        onboard(runtime, "no-upstream", progress=False)
    with pytest.raises(NotFoundError, match="not found"):
        onboard(runtime, "nobody", progress=False)


def test_the_onboard_command_records_the_aptitude(
    databases: ThrowawayDatabases, embedder: CachedEmbedder, tmp_path: Path
) -> None:
    """`capprof onboard MODEL` end to end: its own database and embedded Qdrant, as an operator runs it."""
    url = databases.new()
    upgrade_database(url)
    env = {"CAPPROF_DATA_DIR": str(tmp_path / "data"), "CAPPROF_DATABASE_URL": url, "CAPPROF_DEVICE": "cpu"}
    settings = make_settings(tmp_path / "data", database_url=url, qdrant_path=str(tmp_path / "data" / "qdrant"))
    runtime = Runtime(settings, embedder=embedder)
    family = small_family(tmp_path, shared_family("zeroeval"), 120)
    with runtime.transaction() as session:
        import_data(session, runtime.store, runtime.embedder, settings, family, progress=False)
        test = build_test(session, runtime.store, gradable_only=True)
        texts = {item.id: item.query_id for task in test.tasks for item in task.items}
        queries = {q.id: q for q in session.scalars(select(EvalQuery).where(EvalQuery.id.in_(texts.values())))}
        items = {i: (queries[q].text, queries[q].answer or "") for i, q in texts.items()}
    runtime.close()  # embedded Qdrant: one process at a time
    answers = {text: _reply(gold, _right(text)) for text, gold in items.values()}
    with serve(make_upstream(UpstreamLog(), answers=answers)) as upstream_url:
        with runtime.transaction() as session:
            session.add(LlmModel(name="cli-model", endpoint_url=f"{upstream_url}/v1", upstream_model="plain"))
        result = CliRunner().invoke(cli, ["onboard", "cli-model", "--no-progress", "--concurrency", "4"], env=env)
    assert result.exit_code == 0, result.output
    share = sum(_right(t) for t, _ in items.values()) / len(items)
    assert f"accuracy {share:.3f}" in result.output
    with runtime.sessions() as session:
        test = current_test(session)
        model_id = session.scalar(select(LlmModel.id).where(LlmModel.name == "cli-model"))
        assert test is not None and model_id is not None
        recorded = aptitude_matrix(session, test, [model_id])[0]
        expected = [sum(_right(items[i.id][0]) for i in task.items) / len(task.items) for task in test.tasks]
    assert recorded.tolist() == pytest.approx(expected)
