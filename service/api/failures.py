"""Database errors as HTTP answers: a refused value is the client's 422 (or 409), only a lost store is a 503.

The schemas refuse what the stores cannot hold; these handlers are the net for whatever still gets through.
Bodies name the column or constraint the database reports, never the driver's message (it can carry values,
hosts and ports).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from fastapi import Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from service.api.request_id import REQUEST_ID, internal_error

logger = logging.getLogger(__name__)

# SQLite names the failure in its message: "UNIQUE constraint failed: models.name".
_SQLITE = re.compile(r"^(UNIQUE|NOT NULL|CHECK|FOREIGN KEY) constraint failed(?:: (.+))?$")
_KEY_COLUMNS = re.compile(r"^Key \((.+?)\)=")
_SQLSTATE_KIND = {"23505": "UNIQUE", "23502": "NOT NULL", "23514": "CHECK", "23503": "FOREIGN KEY"}
_PROBLEM = {
    "UNIQUE": "already exists",
    "NOT NULL": "may not be null",
    "CHECK": "is not an allowed value",
    "FOREIGN KEY": "refers to something that does not exist",
}


def _body(field: str, problem: str) -> dict[str, object]:
    return {"detail": f"{field}: {problem}", "errors": [{"field": field, "problem": problem}]}


def _constraint(exc: DBAPIError) -> tuple[str | None, str]:
    """(kind, field) from the driver's structured diagnostics (Postgres) or SQLite's message."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        diag = getattr(orig, "diag", None)
        column = getattr(diag, "column_name", None)
        # a unique violation names its columns only in "Key (name)=(value) already exists": keep the columns
        keyed = _KEY_COLUMNS.match(getattr(diag, "message_detail", None) or "")
        constraint = getattr(diag, "constraint_name", None)
        return _SQLSTATE_KIND.get(sqlstate), column or (keyed and keyed.group(1)) or constraint or "body"
    found = _SQLITE.match(str(orig).strip())
    if found is None:
        return None, "body"
    target = (found.group(2) or "").split(",")[0].strip()
    return found.group(1), target.split(".")[-1] or "body"


async def integrity_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IntegrityError)
    kind, field = _constraint(exc)
    logger.info("database refused a write (%s on %s), request id %s", kind, field, REQUEST_ID.get())
    code = status.HTTP_409_CONFLICT if kind == "UNIQUE" else status.HTTP_422_UNPROCESSABLE_CONTENT
    return JSONResponse(_body(field, _PROBLEM.get(kind or "", "the database refused the value")), status_code=code)


async def data_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DataError)
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    problem = {
        "22003": "a number is out of the database's range",
        "22001": "a text is longer than its column",
    }.get(sqlstate, "a value cannot be stored (out of range or an invalid character)")
    logger.info("database refused a value (sqlstate %s), request id %s", sqlstate or "-", REQUEST_ID.get())
    return JSONResponse(_body("body", problem), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def database_error(unavailable: Handler) -> Handler:
    """Any other driver error: a dropped connection is the store being down (503); the rest is our bug (500)."""

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DBAPIError)
        if exc.connection_invalidated:
            return await unavailable(request, exc)
        logger.error("database error, request id %s", REQUEST_ID.get(), exc_info=exc)
        return internal_error(REQUEST_ID.get())

    return handler
