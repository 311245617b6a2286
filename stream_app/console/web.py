"""The console's HTTP surface (aiohttp): one page, its two static files, a JSON API.

Every request needs an analyst: ``Authorization: Bearer <token>``, or the session cookie
set by ``POST /login``. Without one the answer is 401 (the page: a login form; the API: a
JSON error). A ``POST`` authenticated by cookie must carry the session's CSRF token in
``X-CSRF-Token``, and any ``POST`` whose ``Origin`` is another site is refused.

| route | what |
|---|---|
| ``GET /`` | the page (``static/index.html``) |
| ``GET /static/console.js``, ``/static/console.css`` | its script and style |
| ``POST /login``, ``POST /logout`` | a form's ``token`` -> session cookie; log out |
| ``GET /api/session`` | the analyst, the CSRF token (cookie sessions), the namespace |
| ``GET /api/alerts`` | the latest alerts (filters: ``customer``, ``terminal``, ``model``, |
| | ``min_score``; ``limit``) |
| ``GET /api/alerts/{id}`` | one alert, its customer's recent transactions |
| ``POST /api/alerts/{id}/decision`` | ``{"decision": "fraud" | "genuine"}``: label + audit line |
| ``GET /api/metrics`` | the worker's figures (null: not published) |
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from stream_app.console.auth import Analysts, Session, Sessions, bearer_token
from stream_app.console.decisions import parse_decision
from stream_app.console.service import Console
from stream_app.console.state import AlertFilter, alert_detail, alert_summary
from stream_app.errors import DependencyUnavailable

COOKIE = "fraudstream_console"
CSRF_HEADER = "X-CSRF-Token"
STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
MAX_LIST = 500
DEFAULT_LIST = 200
MAX_BODY_BYTES = 64 * 1024

PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
LOGIN_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

ANALYST = web.RequestKey("analyst", str)
CONSOLE = web.AppKey("console", Console)
ANALYSTS = web.AppKey("analysts", Analysts)
SESSIONS = web.AppKey("sessions", Sessions)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _static(name: str) -> bytes:
    return (importlib.resources.files("stream_app.console") / "static" / name).read_bytes()


def _login_page(message: str = "") -> web.Response:
    text = _static("login.html").decode()
    note = f'<p class="error">{message}</p>' if message else ""  # our own fixed texts only
    return web.Response(
        status=401,
        text=text.replace("<!--message-->", note),
        content_type="text/html",
        headers={"Content-Security-Policy": LOGIN_POLICY},
    )


def _unauthorized(request: web.Request) -> web.StreamResponse:
    if request.path.startswith("/api/") or request.method != "GET":
        return web.json_response(
            {"error": "no valid token: send Authorization: Bearer <token> or log in"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="fraudstream console"'},
        )
    return _login_page()


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; an analyst (token or session) for every route
    but the login form's target; CSRF and origin checks on POSTs."""
    if request.method == "POST" and not _same_origin(request):
        response: web.StreamResponse = web.json_response(
            {"error": "cross-origin request refused"}, status=403
        )
    elif request.path == "/login" and request.method == "POST":
        response = await handler(request)
    else:
        analyst, csrf_ok = _identify(request)
        if analyst is None:
            response = _unauthorized(request)
        elif request.method == "POST" and not csrf_ok:
            response = web.json_response(
                {"error": f"missing or wrong {CSRF_HEADER} header; reload the page"}, status=403
            )
        else:
            request[ANALYST] = analyst
            response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"  # no-referrer would send Origin: null
    response.headers["Cache-Control"] = "no-store"
    return response


def _identify(request: web.Request) -> tuple[str | None, bool]:
    """The request's analyst, and whether a POST may go on (a bearer token, or a cookie
    session with its CSRF token)."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is not None:
        return request.app[ANALYSTS].check(token), True
    session = _session(request)
    if session is None:
        return None, False
    return session.analyst, session.csrf_ok(request.headers.get(CSRF_HEADER))


def _session(request: web.Request) -> Session | None:
    return request.app[SESSIONS].get(request.cookies.get(COOKIE))


async def _login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = form.get("token")
    analyst = request.app[ANALYSTS].check(token.strip()) if isinstance(token, str) else None
    if analyst is None:
        return _login_page("That token is not valid.")
    session = request.app[SESSIONS].open(analyst)
    response = _see_home()
    response.set_cookie(
        COOKIE, session.id, httponly=True, samesite="Strict", path="/",
        secure=request.secure,
    )  # fmt: skip
    return response


def _see_home() -> web.Response:
    return web.Response(status=303, headers={"Location": "/"})


async def _logout(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    if session is not None:
        request.app[SESSIONS].close(session.id)
    response = _see_home()
    response.del_cookie(COOKIE, path="/")
    return response


async def _page(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_static("index.html"), content_type="text/html")


async def _asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=STATIC[name])


async def _session_info(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    console = request.app[CONSOLE]
    return web.json_response({
        "analyst": request[ANALYST],
        "csrf": session.csrf if session is not None else None,
        "namespace": console.settings.namespace,
        "topics": {"alerts": console.topics.alerts, "labels": console.topics.labels},
    })  # fmt: skip


def _bad_request(problem: str) -> web.Response:
    return web.json_response({"error": problem}, status=400)


async def _alerts(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    try:
        where = AlertFilter.from_query(request.query)
        limit = int(request.query.get("limit", DEFAULT_LIST))
    except ValueError as exc:
        return _bad_request(str(exc))
    state = console.state
    alerts = state.alerts.latest(where, max(1, min(limit, MAX_LIST)))
    return web.json_response({
        "version": state.version,
        "held": len(state.alerts),
        "received": state.alerts.received,
        "invalid": state.invalid,
        "feed_errors": console.feed_errors,
        "alerts": [alert_summary(a, state.outcomes.get(a.transaction_id)) for a in alerts],
    })  # fmt: skip


async def _alert(request: web.Request) -> web.StreamResponse:
    state = request.app[CONSOLE].state
    alert = state.alerts.get(request.match_info["alert_id"])
    if alert is None:
        return web.json_response({"error": "no such alert held"}, status=404)
    detail = alert_detail(
        alert,
        state.outcomes.get(alert.transaction_id),
        state.transactions.of(alert.customer_id),
        state.scores,
        state.outcomes,
    )
    return web.json_response(detail)


async def _decide(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    alert = console.state.alerts.get(request.match_info["alert_id"])
    if alert is None:
        return web.json_response({"error": "no such alert held"}, status=404)
    try:
        body: Any = await request.json()
        is_fraud = parse_decision(body.get("decision") if isinstance(body, dict) else None)
    except (ValueError, json.JSONDecodeError) as exc:
        return _bad_request(f"send a JSON object {{\"decision\": \"fraud\" | \"genuine\"}}: {exc}")
    try:
        decision = await console.decide(alert, request[ANALYST], is_fraud)
    except DependencyUnavailable as exc:
        return web.json_response({"error": str(exc)}, status=503)
    return web.json_response(decision.record())


async def _metrics(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[CONSOLE].figures())


def console_app(console: Console, analysts: Analysts, sessions: Sessions) -> web.Application:
    """The aiohttp application of ``console``."""
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY_BYTES)
    app[CONSOLE] = console
    app[ANALYSTS] = analysts
    app[SESSIONS] = sessions
    app.router.add_get("/", _page)
    app.router.add_get("/static/{name}", _asset)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_get("/api/session", _session_info)
    app.router.add_get("/api/alerts", _alerts)
    app.router.add_get("/api/alerts/{alert_id}", _alert)
    app.router.add_post("/api/alerts/{alert_id}/decision", _decide)
    app.router.add_get("/api/metrics", _metrics)
    return app
