"""Capabilities and domains: list them, or add one with exemplars (used by the next route)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import func, select

from service.api.deps import AdminDep, RequireRead, RuntimeDep, SessionDep
from service.api.responses import errors
from service.api.schemas import DimensionCreate, DimensionOut
from service.errors import ConflictError
from service.registry.catalog import add_dimension
from service.store.orm import Dimension, Exemplar

router = APIRouter(prefix="/v1/dimensions", tags=["dimensions"], responses=errors(401, 403, 422, 503))


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[AdminDep], responses=errors(401, 409, 422))
def create_dimension(body: DimensionCreate, session: SessionDep, runtime: RuntimeDep) -> DimensionOut:
    with session.begin():
        try:
            dimension = add_dimension(
                session, runtime.store, runtime.embedder, body.kind, body.name, body.description, body.exemplars
            )
        except ConflictError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=f"name: {exc}") from exc
        count = session.scalar(select(func.count()).where(Exemplar.dimension_id == dimension.id)) or 0
        out = DimensionOut(
            id=dimension.id,
            kind=dimension.kind,
            name=dimension.name,
            description=dimension.description,
            source=dimension.source,
            exemplars=count,
        )
    runtime.refresh_after_write(session)
    return out


@router.get("", dependencies=[RequireRead])
def list_dimensions(session: SessionDep) -> list[DimensionOut]:
    counts = dict(session.execute(select(Exemplar.dimension_id, func.count()).group_by(Exemplar.dimension_id)).all())
    return [
        DimensionOut(
            id=d.id, kind=d.kind, name=d.name, description=d.description, source=d.source, exemplars=counts.get(d.id, 0)
        )
        for d in session.scalars(select(Dimension).order_by(Dimension.kind, Dimension.name))
    ]
