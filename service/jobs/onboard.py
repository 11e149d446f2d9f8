"""`capprof onboard MODEL`: run the current aptitude test through the model's upstream, grade, record.

Items are asked with bounded concurrency and retried on upstream failures; every graded item is appended to a
resume file at once, so an interrupted run picks up where it stopped. Items without a gold answer (or from a family
without a grading rule) are skipped. The scores go through the registry's `record_answers`, as a POST of aptitude
answers would, so the model is routable as soon as the command ends.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from tqdm import tqdm

from profiling.grading import gradable, grade, prompt
from service.errors import NotFoundError
from service.gateway.upstream import AllUpstreamsFailed, UpstreamPool
from service.registry.aptitude import Answer, record_answers
from service.routing.state import UpstreamTarget
from service.runtime import Runtime
from service.store.orm import EvalQuery, LlmModel
from service.store.readers import aptitude_matrix, current_test


@dataclass(frozen=True)
class Item:
    item_id: int
    benchmark: str
    subject: str | None
    text: str
    gold: str


@dataclass
class OnboardReport:
    model: str
    version: int
    items: int = 0
    gradable: int = 0
    resumed: int = 0
    asked: int = 0
    failed: int = 0
    recorded: int = 0
    accuracy: float | None = None
    aptitude: list[float | None] = field(default_factory=list)
    resume_file: str = ""


def resume_path(runtime: Runtime, model: str, version: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model)
    return runtime.settings.data_dir / "onboard" / f"{safe}.aptitude-v{version}.jsonl"


def _read_resume(path: Path) -> dict[int, float]:
    done: dict[int, float] = {}
    if path.exists():
        for line in path.read_text("utf-8").splitlines():
            try:
                row = json.loads(line)
                done[int(row["item_id"])] = float(row["score"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by an interruption
    return done


def _reply_text(body: bytes) -> str:
    try:
        payload: Any = json.loads(body)
        content = payload["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


async def _ask_all(
    runtime: Runtime,
    target: UpstreamTarget,
    items: list[Item],
    concurrency: int,
    retries: int,
    retry_delay_s: float,
    max_tokens: int | None,
    record: Callable[[Item, float], None],
    transport: httpx.AsyncBaseTransport | None,
) -> int:
    """Asks every item (at most `concurrency` at a time); returns how many could not be answered."""
    pool = UpstreamPool(runtime.settings, transport)
    gate = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(item: Item) -> None:
        nonlocal failed
        body: dict[str, Any] = {"messages": prompt(item.benchmark, item.text), "temperature": 0}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        async with gate:
            for attempt in range(retries + 1):
                try:
                    opened = await pool.open([target], body, stream=False)
                except AllUpstreamsFailed:
                    if attempt < retries:
                        await asyncio.sleep(retry_delay_s * 2**attempt)
                    continue
                if opened.ok:
                    record(item, grade(item.benchmark, item.subject, _reply_text(opened.body), item.gold))
                    return
                break  # the upstream refused this request itself: retrying would not help
            failed += 1

    try:
        await asyncio.gather(*(one(item) for item in items))
    finally:
        await pool.aclose()
    return failed


def onboard(
    runtime: Runtime,
    model_name: str,
    concurrency: int = 8,
    retries: int = 3,
    retry_delay_s: float = 1.0,
    max_tokens: int | None = None,
    restart: bool = False,
    progress: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> OnboardReport:
    """Runs, grades and records the current aptitude test for MODEL through its upstream."""
    with runtime.sessions() as session:
        model = session.scalar(select(LlmModel).where(LlmModel.name == model_name))
        if model is None:
            raise NotFoundError(f"model {model_name!r} not found")
        if not model.endpoint_url:
            raise NotFoundError(f"model {model_name!r} has no upstream: set its endpoint_url first")
        test = current_test(session)
        if test is None:
            raise NotFoundError("no aptitude test built yet (capprof aptitude build --gradable-only)")
        target = UpstreamTarget(
            model.name,
            model.endpoint_url,
            model.upstream_model or model.name,
            model.api_key_env,
            model.input_usd_per_mtok,
            model.output_usd_per_mtok,
        )
        query_of = {item.id: item.query_id for task in test.tasks for item in task.items}
        queries = {q.id: q for q in session.scalars(select(EvalQuery).where(EvalQuery.id.in_(list(query_of.values()))))}
        items = [
            Item(item_id, queries[q].benchmark, queries[q].subject, queries[q].text, queries[q].answer or "")
            for item_id, q in query_of.items()
        ]
        version = test.version

    report = OnboardReport(model=model_name, version=version, items=len(items))
    todo = [i for i in items if gradable(i.benchmark, i.gold)]
    report.gradable = len(todo)
    path = resume_path(runtime, model_name, version)
    report.resume_file = str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if restart:
        path.unlink(missing_ok=True)
    scores = _read_resume(path)
    report.resumed = sum(1 for i in todo if i.item_id in scores)
    todo = [i for i in todo if i.item_id not in scores]
    report.asked = len(todo)

    with (
        path.open("a", encoding="utf-8") as resume,
        tqdm(total=len(todo), desc=f"onboarding {model_name}", unit="item", disable=not progress) as bar,
    ):

        def record(item: Item, score: float) -> None:
            scores[item.item_id] = score
            resume.write(json.dumps({"item_id": item.item_id, "score": score}) + "\n")
            resume.flush()
            bar.update(1)

        report.failed = asyncio.run(
            _ask_all(runtime, target, todo, concurrency, retries, retry_delay_s, max_tokens, record, transport)
        )

    answers = [Answer(item_id, score) for item_id, score in sorted(scores.items()) if item_id in query_of]
    if answers:
        with runtime.transaction() as session:
            model = session.scalar(select(LlmModel).where(LlmModel.name == model_name))
            test = current_test(session)
            if model is None or test is None or test.version != version:
                raise NotFoundError(f"aptitude test v{version} or model {model_name!r} changed during the run")
            report.recorded = record_answers(
                session, runtime.store, runtime.embedder, runtime.settings, model, test, answers
            )
            vector = aptitude_matrix(session, test, [model.id])[0]
        report.aptitude = [None if math.isnan(v) else float(v) for v in vector]
        report.accuracy = sum(a.score for a in answers) / len(answers)
    return report
