"""The stored aptitude test: build a new version from the evaluation data, and score a model's answers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from profiling.aptitude import build_aptitude_test
from profiling.embedding_cache import CachedEmbedder
from service.errors import NotFoundError
from service.registry.catalog import EvaluationInput, add_evaluations
from service.settings import Settings
from service.store.generation import APTITUDE, bump_generation
from service.store.orm import AptitudeItem, AptitudeResult, AptitudeTask, AptitudeTest, EvalQuery, EvalRecord, LlmModel
from service.store.readers import evaluation_matrix
from service.store.upsert import upsert
from service.store.vector_store import VectorStore


def build_test(session: Session, store: VectorStore, gradable_only: bool = False) -> AptitudeTest:
    """A new version built from all evaluation queries with vectors and the active models' outcomes.

    `gradable_only` keeps the queries with a gold answer, so `capprof onboard` can grade every item itself."""
    data = evaluation_matrix(session, store)
    known = ~np.isnan(data.outcomes)
    usable = known.sum(axis=1) >= 2
    if gradable_only:
        answered = session.scalars(select(EvalQuery.id).where(EvalQuery.answer.is_not(None), EvalQuery.answer != ""))
        usable &= np.isin(data.query_ids, np.fromiter(answered, np.int64))
    if not usable.any():
        raise NotFoundError("no evaluation data to build an aptitude test from: import data first")
    query_ids = data.query_ids[usable]
    queries = {q.id: q for q in session.scalars(select(EvalQuery).where(EvalQuery.id.in_([int(i) for i in query_ids])))}
    texts = [queries[int(i)].text for i in query_ids]
    subjects = [queries[int(i)].subject or queries[int(i)].domain or "" for i in query_ids]
    built = build_aptitude_test(texts, subjects, data.vectors[usable], data.outcomes[usable])
    version = (session.scalar(select(func.max(AptitudeTest.version))) or 0) + 1
    built_from = {"queries": int(usable.sum()), "models": len(data.model_ids), "gradable_only": gradable_only}
    test = AptitudeTest(version=version, built_from=built_from)
    for task in built.tasks:
        test.tasks.append(
            AptitudeTask(
                position=task.position,
                description=task.description,
                keywords=list(task.keywords),
                items=[AptitudeItem(query_id=int(query_ids[r]), position=p) for p, r in enumerate(task.item_rows)],
            )
        )
    session.add(test)
    session.flush()
    refresh_results(session, test)
    bump_generation(session, APTITUDE)
    return test


def refresh_results(session: Session, test: AptitudeTest, model_ids: Sequence[int] | None = None) -> None:
    """Aptitude vectors (accuracy per task) of models from their evaluation records on the test's items."""
    task_of = {item.query_id: task.id for task in test.tasks for item in task.items}
    stmt = select(EvalRecord.model_id, EvalRecord.query_id, EvalRecord.score).where(
        EvalRecord.query_id.in_(list(task_of))
    )
    if model_ids is not None:
        stmt = stmt.where(EvalRecord.model_id.in_(list(model_ids)))
    sums: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0])
    for model_id, query_id, score in session.execute(stmt):
        cell = sums[(model_id, task_of[query_id])]
        cell[0] += score
        cell[1] += 1
    upsert(
        session,
        AptitudeResult.__table__,  # type: ignore[arg-type]
        [{"model_id": m, "task_id": t, "accuracy": total / n, "items": int(n)} for (m, t), (total, n) in sums.items()],
        keys=("model_id", "task_id"),
        update=("accuracy", "items"),
    )


@dataclass(frozen=True)
class Answer:
    item_id: int
    score: float


def record_answers(
    session: Session,
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    model: LlmModel,
    test: AptitudeTest,
    answers: Sequence[Answer],
) -> int:
    """A new model's scored answers become evaluation records (source = aptitude) and its aptitude vector."""
    items = {item.id: item for task in test.tasks for item in task.items}
    for position, answer in enumerate(answers):
        if answer.item_id not in items:
            raise NotFoundError(
                f"answers[{position}].item_id: {answer.item_id} is not an item of aptitude test v{test.version}"
            )
    queries = {
        q.id: q
        for q in session.scalars(
            select(EvalQuery).where(EvalQuery.id.in_([items[a.item_id].query_id for a in answers]))
        )
    }
    inputs = [
        EvaluationInput(
            score=a.score,
            benchmark=queries[items[a.item_id].query_id].benchmark,
            query_id=queries[items[a.item_id].query_id].external_id,
        )
        for a in answers
    ]
    written = add_evaluations(session, store, embedder, settings, model, inputs, source="aptitude")
    refresh_results(session, test, [model.id])
    bump_generation(session, APTITUDE, model_id=model.id)
    return written
