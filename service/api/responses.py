"""What each endpoint can answer besides success, for OpenAPI: the contract is the schema (issue 10).

Every error body has a `detail` string; a 422 also lists each problem with the field it concerns.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    detail: str = Field(description="what went wrong, naming the field where there is one")


class FieldProblem(BaseModel):
    field: str = Field(description="dotted path of the offending field, e.g. evaluations[0].score; 'body' if none")
    problem: str


class ValidationErrorOut(ErrorOut):
    errors: list[FieldProblem] = Field(description="one entry per problem found")


_RESPONSES: dict[int, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "key missing, empty, unknown or revoked (Bearer, or X-Admin-Key)"},
    403: {"model": ErrorOut, "description": "the key's scope is too small for this endpoint"},
    404: {"model": ErrorOut, "description": "the named resource does not exist"},
    409: {"model": ErrorOut, "description": "clashes with what is stored (a duplicate name, a stale version)"},
    410: {"model": ErrorOut, "description": "the named record existed but is past retention (purged)"},
    422: {"model": ValidationErrorOut, "description": "invalid input; every problem names its field"},
    429: {
        "model": ErrorOut,
        "description": "the key's monthly budget is spent (estimated routed cost); Retry-After says when it resets",
    },
    502: {"model": ErrorOut, "description": "no upstream model answered (every fallback failed)"},
    503: {
        "model": ErrorOut,
        "description": "a store is down (nothing was changed; retry after Retry-After), or nothing to route to yet",
    },
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry documenting these error statuses."""
    return {code: _RESPONSES[code] for code in codes}
