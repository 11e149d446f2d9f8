"""/admin/keys: create (the key is returned once), list (never the key) and revoke API keys."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from service.api.auth import AdminKeyDep
from service.api.deps import RuntimeDep, SessionDep
from service.api.responses import errors
from service.api.schemas import Strict, UtcDatetime
from service.errors import ConflictError, NotFoundError
from service.registry.keys import KEY_NAME, Scope, create_key, list_keys, revoke_key
from service.store.orm import ApiKey

router = APIRouter(prefix="/admin/keys", tags=["admin"])


class KeyCreate(Strict):
    """No coercion ("5" for 5) and no Infinity: an infinite budget once came back as null, which reads as none."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(min_length=1, max_length=200, pattern=KEY_NAME.pattern)
    scope: Scope = "route"
    default_lambda: float | None = Field(default=None, ge=0, le=1000, alias="lambda")
    monthly_budget_usd: float | None = Field(default=None, ge=0, le=1e9)


class KeyOut(BaseModel):
    name: str
    scope: str
    default_lambda: float | None = Field(serialization_alias="lambda")
    monthly_budget_usd: float | None
    created_at: UtcDatetime | None  # SQLite returns naive UTC; the schema promises RFC 3339 with an offset
    revoked_at: UtcDatetime | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyOut:
        return cls(
            name=row.name,
            scope=row.scopes,
            default_lambda=row.default_lambda,
            monthly_budget_usd=row.monthly_budget_usd,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )


class KeyCreated(KeyOut):
    key: str = Field(description="the API key; shown only this once, store it now")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model_by_alias=True,
    responses=errors(401, 403, 409, 422, 503),
)
def create_api_key(body: KeyCreate, session: SessionDep, runtime: RuntimeDep, admin: AdminKeyDep) -> KeyCreated:
    with session.begin():
        try:
            created = create_key(
                session,
                runtime.settings.resolved_key_secret,
                body.name,
                body.scope,
                body.default_lambda,
                body.monthly_budget_usd,
            )
        except ConflictError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        session.refresh(created.row)
        out = KeyOut.of(created.row)
    return KeyCreated(**out.model_dump(), key=created.key)


@router.get("", response_model_by_alias=True, responses=errors(401, 403, 422, 503))
def list_api_keys(session: SessionDep, admin: AdminKeyDep) -> list[KeyOut]:
    return [KeyOut.of(row) for row in list_keys(session)]


@router.delete("/{name}", response_model_by_alias=True, responses=errors(401, 403, 404, 422, 503))
def revoke_api_key(name: str, session: SessionDep, admin: AdminKeyDep) -> KeyOut:
    with session.begin():
        try:
            row = revoke_key(session, name)
        except NotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
        return KeyOut.of(row)
