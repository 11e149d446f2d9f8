"""The admin console's pages under /console: server-rendered Jinja2, charts by the vendored Chart.js.

Every page needs a console session (an admin key given once to the login form); without one it answers 303 to
/console/login. Every POST carries the session's CSRF token (the login form a pre-session one) and, when the
browser sends an Origin, it must be this server's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import AfterValidator, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.auth import Caller
from service.api.deps import BatcherDep, DecisionLogDep, MetricsDep, RuntimeDep, SessionDep
from service.api.routing import route_one
from service.api.schemas import RouteRequest, clamp_report_moment
from service.console import queries
from service.console.session import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    LOGIN_FORM_SECONDS,
    SESSION_COOKIE,
    ConsoleUser,
    csrf_ok,
    csrf_token,
    current_user,
    login_form_id,
    login_payload,
    new_login_form,
    sign,
)
from service.registry.evaluations import latest_evaluations
from service.runtime import Runtime
from service.store.orm import OperatingPoint

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".md": "text/markdown"}
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)

HEADERS = {
    # no inline scripts, nothing from elsewhere; inline style attributes only (heatmap colours, bar widths)
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
DEFAULT_PAGE = "/console/models"
LOCAL_NEXT = re.compile(r"/console(/[A-Za-z0-9._~%/?&=+:,-]*)?")
TRAFFIC_MAX_DAYS = 366
DEFAULT_DAYS = 7  # the Traffic page's range unless one is picked


def safe_next(target: str | None) -> str:
    """Where to go after login: only a local /console path, never another host (an open redirect), nor a dot
    segment that a browser resolves out of the console (/console/../admin)."""
    if not target or not LOCAL_NEXT.fullmatch(target) or "//" in target or "/console/login" in target:
        return DEFAULT_PAGE
    path = target.split("?", 1)[0]
    if any(segment in (".", "..") for segment in unquote(path).split("/")):
        return DEFAULT_PAGE
    return target


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def console_user(request: Request, runtime: Annotated[Runtime, Depends(_runtime)]) -> ConsoleUser:
    """The logged-in admin, or a 303 to the login page that comes back here afterwards."""
    with runtime.sessions() as session:
        user = current_user(runtime.settings, request.cookies.get(SESSION_COOKIE), session)
    if user is None:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(
            status.HTTP_303_SEE_OTHER,
            detail="console login required",
            headers={"Location": f"/console/login?next={quote(safe_next(here), safe='')}"},
        )
    request.state.caller = user.name
    return user


UserDep = Annotated[ConsoleUser, Depends(console_user)]


def _check_origin(request: Request) -> None:
    """A cross-site form post is refused even before its token is looked at (SameSite=Strict is the first guard).

    Host names are compared, not ports or schemes: a proxy in front (deploy/nginx.conf passes `Host $host`, without
    the port; TLS may end there) changes those between the browser and this process."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    host = urlsplit(origin).hostname if origin != "null" else None
    if host is None or host.lower() != (request.url.hostname or "").lower():
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="csrf: cross-origin form post refused")


def _check_csrf(request: Request, user: ConsoleUser, token: str | None) -> None:
    _check_origin(request)
    if not csrf_ok(request.app.state.runtime.settings, user.session_id, token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="csrf: missing or wrong form token; reload the page")


def render(
    request: Request, template: str, context: dict[str, Any], user: ConsoleUser | None, code: int = 200
) -> Response:
    settings = request.app.state.runtime.settings
    values = {"user": user, "csrf": csrf_token(settings, user.session_id) if user else None, "path": request.url.path}
    response = templates.TemplateResponse(request, template, values | context, status_code=code)
    response.headers.update(HEADERS)
    return response


def _redirect(location: str) -> RedirectResponse:
    response = RedirectResponse(location, status_code=status.HTTP_303_SEE_OTHER)
    response.headers.update(HEADERS)
    return response


# --- login and logout ---------------------------------------------------------------------------------------


def _login_page(request: Request, runtime: Runtime, target: str, error: str | None, code: int) -> Response:
    cookie, sid = new_login_form(runtime.settings)
    response = render(
        request,
        "login.html",
        {"next": target, "error": error, "login_csrf": csrf_token(runtime.settings, sid)},
        None,
        code,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        cookie,
        max_age=LOGIN_FORM_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


@router.get("/login")
def login_form(request: Request, runtime: RuntimeDep, session: SessionDep, next: str | None = None) -> Response:
    target = safe_next(next)
    if current_user(runtime.settings, request.cookies.get(SESSION_COOKIE), session) is not None:
        return _redirect(target)
    return _login_page(request, runtime, target, None, status.HTTP_200_OK)


@router.post("/login")
def login(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    key: Annotated[str, Form(max_length=500)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = DEFAULT_PAGE,
) -> Response:
    _check_origin(request)
    if not csrf_ok(runtime.settings, login_form_id(runtime.settings, request.cookies.get(LOGIN_COOKIE)), csrf):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="csrf: missing or wrong login form token; reload it")
    target = safe_next(next)
    payload = login_payload(runtime.settings, key.strip(), session)
    if payload == "invalid":
        request.app.state.metrics.auth_failures.labels("invalid").inc()
        return _login_page(request, runtime, target, "That key is not a live API key.", 401)
    if payload == "scope":
        request.app.state.metrics.auth_failures.labels("scope").inc()
        return _login_page(
            request, runtime, target, "That key is not admin-scoped; the console needs an admin key.", 403
        )
    assert isinstance(payload, dict)
    response = _redirect(target)
    response.set_cookie(
        SESSION_COOKIE,
        sign(runtime.settings, payload),
        max_age=int(runtime.settings.console_session_hours * 3600),
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/logout")
def logout(request: Request, user: UserDep, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    _check_csrf(request, user, csrf)
    response = _redirect("/console/login")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_secure(request))
    return response


@router.get("")
def home(_: UserDep) -> Response:
    return _redirect(DEFAULT_PAGE)


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The console's own files (Chart.js, its licence, the stylesheet and script), from the package."""
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"name: no console file {name!r}")
    return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "max-age=3600"})


# --- pages --------------------------------------------------------------------------------------------------

SortKey = Literal[
    "name", "provider", "input_price", "output_price", "status", "records", "accuracy", "aptitude", "upstream"
]


def _past_last(page: int, total_pages: int, total: int) -> None:
    if total and page > total_pages:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"page: past the last page ({total_pages})")


@router.get("/models")
def models(
    request: Request,
    user: UserDep,
    session: SessionDep,
    sort: SortKey = "name",
    order: Literal["asc", "desc"] = "asc",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    result = queries.models_page(session, sort, order == "desc", page, per_page)
    _past_last(page, result.pages, result.total)
    return render(request, "models.html", {"result": result, "sort": sort, "order": order}, user)


def _routing_profile(runtime: Runtime) -> Callable[[str], dict[int, float]]:
    """The scores routing uses per model; none while the routing state is not loaded (a replica whose stores were
    down at start-up), when the pages show the stored profiles alone instead of failing."""
    if runtime.router.loaded:
        return runtime.router.state.routing_profile
    return lambda _model: {}


@router.get("/models/{name:path}")
def model(request: Request, user: UserDep, session: SessionDep, runtime: RuntimeDep, name: str) -> Response:
    detail = queries.model_detail(session, name, _routing_profile(runtime)(name))
    if detail is None:
        return render(request, "not_found.html", {"what": f"model {name!r}"}, user, status.HTTP_404_NOT_FOUND)
    cells = detail["capabilities"] + detail["domains"]
    chart = {
        "type": "bar",
        "data": {
            "labels": [c["name"] for c in cells],
            "datasets": [
                {
                    "label": "routing's score (shrunk by evidence, on everyone's queries)",
                    "data": [c["routing"] for c in cells],
                    "support": [c["support"] for c in cells],
                    "backgroundColor": ["#4e79a7"] * len(detail["capabilities"]) + ["#f28e2b"] * len(detail["domains"]),
                },
                {
                    "label": "share right on its records",
                    "data": [c["score"] for c in cells],
                    "backgroundColor": "#bab0ac",
                },
            ],
        },
        "options": {"indexAxis": "y", "scales": {"x": {"min": 0, "max": 1}}},
    }
    return render(request, "model.html", {"d": detail, "chart": chart}, user)


@router.get("/profiles")
def profiles(
    request: Request,
    user: UserDep,
    session: SessionDep,
    runtime: RuntimeDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 40,
) -> Response:
    heat = queries.heatmap(session, page, per_page, _routing_profile(runtime))
    _past_last(page, heat.page.pages, heat.page.total)
    return render(request, "profiles.html", {"heat": heat}, user)


def _line(labels: list[str], datasets: list[dict[str, Any]], y_title: str, stacked: bool = False) -> dict[str, Any]:
    return {
        "type": "line",
        "data": {"labels": labels, "datasets": datasets},
        "options": {
            "animation": False,
            "interaction": {"mode": "index", "intersect": False},
            "scales": {"y": {"beginAtZero": True, "stacked": stacked, "title": {"display": True, "text": y_title}}},
        },
    }


@router.get("/traffic")
def traffic(
    request: Request,
    user: UserDep,
    session: SessionDep,
    start: Annotated[
        date | None,
        Query(alias="from", description="first day (UTC), default 6 days before `to`"),
        AfterValidator(clamp_report_moment),
    ] = None,
    end: Annotated[
        date | None,
        Query(alias="to", description="last day (UTC), default today"),
        AfterValidator(clamp_report_moment),
    ] = None,
) -> Response:
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="from: after `to`")
    if (end - start).days >= TRAFFIC_MAX_DAYS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"from: a range of at most {TRAFFIC_MAX_DAYS} days"
        )
    data = queries.traffic(session, start, end)
    s = data["savings"]
    charts = {
        "volume": _line(data["days"], [d | {"fill": True} for d in data["volume"]], "decisions per day", stacked=True),
        "savings": _line(
            data["days"],
            [
                {"label": "routed traffic", "data": s["routed"]},
                {"label": "always the best model (baseline)", "data": s["best"]},
                {"label": "always the most expensive model", "data": s["most_expensive"], "hidden": True},
            ],
            "cost per day (USD)",
        ),
        "latency": _line(
            data["latency"]["hours"],
            [{"label": "p50", "data": data["latency"]["p50"]}, {"label": "p99", "data": data["latency"]["p99"]}],
            "routing latency (ms)",
        ),
    }
    for kind in ("capability", "domain"):
        rows = data["mix"][kind]
        charts[f"mix_{kind}"] = {
            "type": "bar",
            "data": {
                "labels": [r["dimension"] for r in rows],
                "datasets": [{"label": f"{kind} weight in queries", "data": [r["weight"] for r in rows]}],
            },
            "options": {"animation": False, "indexAxis": "y", "plugins": {"legend": {"display": False}}},
        }
    return render(
        request, "traffic.html", {"charts": charts, "totals": data["totals"], "start": start, "end": end}, user
    )


def _presets(session: Session) -> list[str]:
    """The calibrated presets a route may name, cheapest first (none until `capprof presets calibrate`)."""
    return list(session.scalars(select(OperatingPoint.name).order_by(OperatingPoint.validation_cost_per_query)))


TRY_MODES = ("default", "lambda", "quality", "balanced", "economy")


@router.get("/try")
def try_form(request: Request, user: UserDep, session: SessionDep) -> Response:
    return render(
        request, "try.html", {"form": {"lambda": "0.1", "mode": "default"}, "presets": _presets(session)}, user
    )


def _messages(chat: str) -> list[dict[str, str]]:
    """A short chat typed as lines `role: text` (user, assistant or system); a line without a role continues."""
    messages: list[dict[str, str]] = []
    for line in chat.splitlines():
        role, sep, content = line.partition(":")
        if sep and role.strip().lower() in ("user", "assistant", "system"):
            messages.append({"role": role.strip().lower(), "content": content.strip()})
        elif messages:
            messages[-1]["content"] += "\n" + line
        elif line.strip():
            messages.append({"role": "user", "content": line})
    return messages


def _explanation(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The chosen model's utility as signed parts: each dimension's share, kNN, head, re-ranker, calibration, cost."""
    contribution = (response.get("contributions") or {}).get(response["model"])
    if not contribution:
        return []
    parts = [{"name": name, "kind": "dimension", "value": value} for name, value in contribution["dimensions"].items()]
    parts += [
        {"name": "kNN over evaluated queries", "kind": "knn", "value": contribution["knn"]},
        {"name": "the model's head", "kind": "head", "value": contribution.get("head", 0.0)},
        {"name": "Model-SAT re-ranker", "kind": "reranker", "value": contribution["reranker"]},
        {"name": "calibration", "kind": "calibration", "value": contribution.get("calibration", 0.0)},
        {"name": "cost (lambda x cost)", "kind": "cost", "value": contribution["cost"]},
    ]
    scale = max((abs(p["value"]) for p in parts), default=0.0) or 1.0
    return [p | {"width": round(100 * abs(p["value"]) / scale, 1)} for p in parts]


@router.post("/try")
async def try_query(
    request: Request,
    user: UserDep,
    runtime: RuntimeDep,
    batcher: BatcherDep,
    log: DecisionLogDep,
    metrics: MetricsDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
    text: Annotated[str, Form(max_length=200_000)] = "",
    chat: Annotated[bool, Form()] = False,
    mode: Annotated[str, Form(max_length=50)] = "default",
    cost_weight: Annotated[str, Form(alias="lambda", max_length=50)] = "0.1",
) -> Response:
    """Both choice fields arrive as text and are checked here, so a bad one comes back as the form with its
    error, never as the API's JSON."""
    _check_csrf(request, user, csrf)
    form = {"text": text, "chat": chat, "mode": mode, "lambda": cost_weight}
    body: dict[str, Any] = {"explain": True, "top_n": 5}
    body |= {"messages": _messages(text)} if chat else {"query": text}
    with runtime.sessions() as session:
        presets = _presets(session)
    context: dict[str, Any] = {"form": form, "presets": presets}
    try:
        if mode not in TRY_MODES:
            raise ValueError(f"mode: must be one of {', '.join(TRY_MODES)}")
        if mode == "lambda":
            try:
                body["lambda"] = float(cost_weight)
            except ValueError:
                raise ValueError(f"lambda: {cost_weight!r} is not a number") from None
        elif mode != "default":
            body["preset"] = mode
        route_body = RouteRequest.model_validate(body)
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        return render(request, "try.html", context | {"error": problem}, user, status.HTTP_422_UNPROCESSABLE_CONTENT)
    except ValueError as exc:
        return render(request, "try.html", context | {"error": str(exc)}, user, status.HTTP_422_UNPROCESSABLE_CONTENT)
    caller = Caller(user.name, "admin", label="console")
    try:
        decision = await route_one(route_body, runtime, batcher, log, metrics, caller)
    except HTTPException as exc:
        return render(request, "try.html", context | {"error": str(exc.detail)}, user, exc.status_code)
    answer = decision.model_dump(mode="json", by_alias=True)
    return render(request, "try.html", context | {"decision": answer, "explanation": _explanation(answer)}, user)


@router.get("/quality")
def quality(request: Request, user: UserDep, session: SessionDep) -> Response:
    runs = latest_evaluations(session)
    curves = {}
    for run in runs:
        datasets = []
        for name, points in (run.report.get("cost_quality") or {}).items():
            usable = [p for p in points if p.get("cost_per_query") and p.get("accuracy") is not None]
            datasets.append(
                {
                    "label": name,
                    "data": [{"x": p["cost_per_query"], "y": p["accuracy"]} for p in usable],
                    "showLine": len(usable) > 1,
                    "pointRadius": 3 if len(usable) > 1 else 7,
                }
            )
        curves[run.id] = {
            "type": "scatter",
            "data": {"datasets": datasets},
            "options": {
                "animation": False,
                "scales": {
                    "x": {"type": "logarithmic", "title": {"display": True, "text": "cost per query (USD, log)"}},
                    "y": {"title": {"display": True, "text": "accuracy on held-out queries"}},
                },
            },
        }
    calibration = queries.calibration(session)
    bins = calibration["bins"]
    calibration_chart = {
        "type": "scatter",
        "data": {
            "datasets": [
                {
                    "label": "observed vs predicted (feedback, 10 bins)",
                    "data": [{"x": b["predicted"], "y": b["observed"]} for b in bins],
                    "pointRadius": 6,
                },
                {"label": "perfect calibration", "data": [{"x": 0, "y": 0}, {"x": 1, "y": 1}], "showLine": True},
            ]
        },
        "options": {
            "animation": False,
            "scales": {
                "x": {"min": 0, "max": 1, "title": {"display": True, "text": "predicted P(correct)"}},
                "y": {"min": 0, "max": 1, "title": {"display": True, "text": "observed score"}},
            },
        },
    }
    return render(
        request,
        "quality.html",
        {"runs": runs, "curves": curves, "calibration": calibration, "calibration_chart": calibration_chart},
        user,
    )
