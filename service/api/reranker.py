"""Model-SAT checkpoints: list them; activate one in the live service (no restart)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from service.api.deps import AdminDep, RequireRead, RuntimeDep, SessionDep
from service.api.responses import errors
from service.api.schemas import ActivateIn, RerankerCheckpointOut
from service.errors import NotFoundError
from service.registry.checkpoints import activate
from service.store.readers import list_checkpoints

router = APIRouter(prefix="/v1/reranker", tags=["reranker"], responses=errors(401, 403, 422, 503))


@router.get("", dependencies=[RequireRead])
def read_checkpoints(session: SessionDep) -> list[RerankerCheckpointOut]:
    return [RerankerCheckpointOut.model_validate(c, from_attributes=True) for c in list_checkpoints(session)]


@router.post("/activate", dependencies=[AdminDep], responses=errors(401, 404, 422))
def activate_checkpoint(body: ActivateIn, session: SessionDep, runtime: RuntimeDep) -> RerankerCheckpointOut:
    with session.begin():
        try:
            checkpoint = activate(session, body.version)
        except NotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
        out = RerankerCheckpointOut.model_validate(checkpoint, from_attributes=True)
    runtime.refresh_after_write(session)
    return out
