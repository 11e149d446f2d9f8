"""GET /admin/reports/{name}: the SQL report views as JSON or CSV, admin only."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import AfterValidator

from service.api.auth import AdminKeyDep
from service.api.deps import SessionDep
from service.api.responses import errors
from service.api.schemas import clamp_report_moment
from service.errors import NotFoundError
from service.store.reports import REPORTS, ReportError, ReportFilters, run_report

router = APIRouter(prefix="/admin/reports", tags=["admin"])


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def to_csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@router.get("", responses=errors(401, 403, 422))
def list_reports(admin: AdminKeyDep) -> dict[str, dict[str, Any]]:
    """The reports, what each shows and which filters it takes."""
    return {
        name: {"about": spec.about, "time": spec.time, "filters": sorted(spec.filters)}
        for name, spec in REPORTS.items()
    }


@router.get("/{name}", response_model=None, responses=errors(401, 403, 404, 422, 503))
def read_report(
    name: str,
    session: SessionDep,
    admin: AdminKeyDep,
    start: Annotated[
        datetime | None,
        Query(alias="from", description="ISO date or time (UTC unless zoned)"),
        AfterValidator(clamp_report_moment),
    ] = None,
    end: Annotated[
        datetime | None,
        Query(alias="to", description="exclusive; ISO date or time"),
        AfterValidator(clamp_report_moment),
    ] = None,
    caller: Annotated[str | None, Query(max_length=200)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> dict[str, Any] | Response:
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and end <= start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="to: must be after from")
    try:
        columns, rows = run_report(session, name, ReportFilters(start, end, caller, model))
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except ReportError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    if format == "csv":
        return Response(
            to_csv(columns, rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return {"report": name, "columns": columns, "rows": rows}
