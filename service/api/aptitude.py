"""The aptitude test (to run a new model on) and a model's scored answers (its zero-shot onboarding)."""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from profiling.grading import gradable
from service.api.deps import AdminDep, ModelPathName, RequireRead, RuntimeDep, SessionDep
from service.api.responses import errors
from service.api.schemas import (
    AptitudeAnswersIn,
    AptitudeItemOut,
    AptitudeResultOut,
    AptitudeTaskOut,
    AptitudeTaskScore,
    AptitudeTestOut,
)
from service.errors import NotFoundError
from service.registry.aptitude import Answer, record_answers
from service.store.orm import AptitudeTest, EvalQuery, LlmModel
from service.store.readers import aptitude_matrix, current_test

router = APIRouter(tags=["aptitude"], responses=errors(401, 403, 422, 503))


def aptitude_document(session: Session, test: AptitudeTest) -> AptitudeTestOut:
    """The test as an operator runs it: tasks with their items' texts."""
    query_ids = [item.query_id for task in test.tasks for item in task.items]
    texts = dict(session.execute(select(EvalQuery.id, EvalQuery.text).where(EvalQuery.id.in_(query_ids))).all())
    return AptitudeTestOut(
        version=test.version,
        tasks=[
            AptitudeTaskOut(
                id=task.id,
                description=task.description,
                items=[AptitudeItemOut(id=item.id, text=texts[item.query_id]) for item in task.items],
            )
            for task in test.tasks
        ],
    )


@router.get("/v1/aptitude", dependencies=[RequireRead], responses=errors(401, 403, 404))
def read_aptitude_test(session: SessionDep) -> AptitudeTestOut:
    test = current_test(session)
    if test is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no aptitude test built yet (capprof aptitude build)")
    return aptitude_document(session, test)


class AptitudeGoldOut(BaseModel):
    item_id: int
    benchmark: str
    subject: str | None
    answer: str | None
    gradable: bool = Field(description="a gold answer and a grading rule exist (capprof onboard grades it)")


class AptitudeAnswersOut(BaseModel):
    version: int
    answers: list[AptitudeGoldOut]


@router.get("/v1/aptitude/answers", dependencies=[AdminDep], responses=errors(401, 403, 404))
def read_aptitude_answers(session: SessionDep) -> AptitudeAnswersOut:
    """The gold answers of the current test's items: admins only, so a model under test cannot read them."""
    test = current_test(session)
    if test is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no aptitude test built yet (capprof aptitude build)")
    query_of = {item.id: item.query_id for task in test.tasks for item in task.items}
    rows = {q.id: q for q in session.scalars(select(EvalQuery).where(EvalQuery.id.in_(list(query_of.values()))))}
    return AptitudeAnswersOut(
        version=test.version,
        answers=[
            AptitudeGoldOut(
                item_id=item_id,
                benchmark=rows[q].benchmark,
                subject=rows[q].subject,
                answer=rows[q].answer,
                gradable=gradable(rows[q].benchmark, rows[q].answer),
            )
            for item_id, q in query_of.items()
        ],
    )


@router.post("/v1/models/{name:path}/aptitude", dependencies=[AdminDep], responses=errors(401, 403, 404, 409, 422))
def submit_aptitude(
    name: ModelPathName, body: AptitudeAnswersIn, session: SessionDep, runtime: RuntimeDep
) -> AptitudeResultOut:
    with session.begin():
        model = session.scalar(select(LlmModel).where(LlmModel.name == name))
        if model is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"model {name!r} not found")
        test = current_test(session)
        if test is None:
            raise HTTPException(status.HTTP_409_CONFLICT, detail="no aptitude test built yet (capprof aptitude build)")
        if body.version is not None and body.version != test.version:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail=f"version: answers are for v{body.version}, the current test is v{test.version}",
            )
        try:
            answered = record_answers(
                session,
                runtime.store,
                runtime.embedder,
                runtime.settings,
                model,
                test,
                [Answer(a.item_id, a.score) for a in body.answers],
            )
        except NotFoundError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
        vector = aptitude_matrix(session, test, [model.id])[0]
        result = AptitudeResultOut(
            model=name,
            version=test.version,
            answered=answered,
            aptitude=[
                AptitudeTaskScore(
                    task_id=task.id, description=task.description, accuracy=None if math.isnan(v) else float(v)
                )
                for task, v in zip(test.tasks, vector, strict=True)
            ],
        )
    runtime.refresh_after_write(session)
    return result
