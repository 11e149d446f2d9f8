"""Model registry: register, list, read, update, delete, and bulk evaluation records."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.api.deps import AdminDep, ModelPathName, RequireRead, RuntimeDep, SessionDep
from service.api.responses import errors
from service.api.schemas import EvaluationIn, EvaluationsIn, EvaluationsOut, ModelCreate, ModelOut, ModelUpdate
from service.errors import NotFoundError
from service.registry.catalog import EvaluationInput, add_evaluations
from service.runtime import Runtime
from service.store.generation import MODEL, bump_generation
from service.store.orm import EvalRecord, LlmModel

router = APIRouter(prefix="/v1/models", tags=["models"], responses=errors(401, 403, 422, 503))


def _get(session: Session, name: str) -> LlmModel:
    model = session.scalar(select(LlmModel).where(LlmModel.name == name))
    if model is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"model {name!r} not found")
    return model


def _out(session: Session, model: LlmModel) -> ModelOut:
    count = session.scalar(select(func.count()).select_from(EvalRecord).where(EvalRecord.model_id == model.id)) or 0
    return ModelOut.model_validate(model, from_attributes=True).model_copy(update={"evaluations": count})


def _write_evaluations(session: Session, runtime: Runtime, model: LlmModel, items: list[EvaluationIn]) -> int:
    inputs = [EvaluationInput(**item.model_dump()) for item in items]
    try:
        return add_evaluations(session, runtime.store, runtime.embedder, runtime.settings, model, inputs)
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[AdminDep], responses=errors(401, 409, 422))
def register_model(body: ModelCreate, session: SessionDep, runtime: RuntimeDep) -> ModelOut:
    with session.begin():
        if session.scalar(select(LlmModel.id).where(LlmModel.name == body.name)) is not None:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=f"name: model {body.name!r} already exists")
        model = LlmModel(**body.model_dump(exclude={"evaluations"}))
        session.add(model)
        session.flush()
        bump_generation(session, MODEL, model_id=model.id)
        if body.evaluations:
            _write_evaluations(session, runtime, model, body.evaluations)
    runtime.refresh_after_write(session)
    return _out(session, model)


@router.get("", dependencies=[RequireRead])
def list_models(session: SessionDep) -> list[ModelOut]:
    counts = dict(session.execute(select(EvalRecord.model_id, func.count()).group_by(EvalRecord.model_id)).all())
    return [
        ModelOut.model_validate(m, from_attributes=True).model_copy(update={"evaluations": counts.get(m.id, 0)})
        for m in session.scalars(select(LlmModel).order_by(LlmModel.name))
    ]


@router.get("/{name:path}", dependencies=[RequireRead], responses=errors(401, 403, 404, 422))
def read_model(name: ModelPathName, session: SessionDep) -> ModelOut:
    return _out(session, _get(session, name))


@router.patch("/{name:path}", dependencies=[AdminDep], responses=errors(401, 404, 422))
def update_model(name: ModelPathName, body: ModelUpdate, session: SessionDep, runtime: RuntimeDep) -> ModelOut:
    with session.begin():
        model = _get(session, name)
        for field, value in body.model_dump(exclude_unset=True).items():
            setattr(model, field, value)
        bump_generation(session, MODEL, model_id=model.id)
    runtime.refresh_after_write(session)
    return _out(session, model)


@router.delete(
    "/{name:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AdminDep],
    responses=errors(401, 404, 422),
)
def delete_model(name: ModelPathName, session: SessionDep, runtime: RuntimeDep) -> Response:
    with session.begin():
        model = _get(session, name)
        bump_generation(session, MODEL, model_id=model.id)
        session.delete(model)
    runtime.refresh_after_write(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name:path}/evaluations", dependencies=[AdminDep], responses=errors(401, 404, 422))
def add_model_evaluations(
    name: ModelPathName, body: EvaluationsIn, session: SessionDep, runtime: RuntimeDep
) -> EvaluationsOut:
    with session.begin():
        model = _get(session, name)
        written = _write_evaluations(session, runtime, model, body.evaluations)
    runtime.refresh_after_write(session)
    return EvaluationsOut(model=name, written=written)
