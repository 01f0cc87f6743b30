"""The explorer's web server: FastAPI routes over :mod:`ntkprior.app.explore.views`, a static page.

Why FastAPI (on Starlette, served by uvicorn): the page needs a handful of JSON endpoints and
static files, nothing more; FastAPI validates each request body against a pydantic model (bounded
sizes, finite numbers, no unknown fields), ships a test client, and runs a plain ``def`` route in
a thread pool so a slow request never blocks another. Dash or Panel would bring their own
component model and state machinery for a page that is a few hundred lines of JavaScript.
Plotting is plotly.js, served from the installed ``plotly`` Python package (``plotly.min.js``): the
page works offline and never loads anything from a CDN.

Errors: every failure is a JSON ``{"error": "one line naming the argument and the fix"}`` with
status 400 (bad values, from the library's ``ValueError``) or 422 (a request the models refuse);
nothing else leaks a traceback to the page.
"""

from __future__ import annotations

import importlib.util
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ntkprior.app.explore import requests as rq
from ntkprior.app.explore import views
from ntkprior.app.explore.jobs import TrainingJobs
from ntkprior.app.report import jsonable

STATIC = Path(__file__).parent / "static"
#: the cookie that tells one page (client) from another, for the one-job-per-client rule
CLIENT_COOKIE = "ntkprior_explore_client"


def plotly_js() -> Path:
    """``plotly.min.js`` inside the installed plotly package (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError('plotly is not installed; pip install "ntkprior[explore]"')
    path = Path(list(spec.submodule_search_locations)[0]) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"plotly is installed but has no {path}; reinstall plotly")
    return path


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    """Pydantic's errors as one line: ``field.path: what is wrong; ...``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where and not message.startswith(where) else message)
    return "; ".join(parts) or "invalid request"


def _for_client(request: Request, respond):
    """``respond(client)`` for the page's client id (its cookie), issuing a new id to a new client."""
    client = request.cookies.get(CLIENT_COOKIE)
    response = respond(client or (client := uuid.uuid4().hex))
    if CLIENT_COOKIE not in request.cookies:
        response.set_cookie(CLIENT_COOKIE, client, httponly=True, samesite="strict")
    return response


def create_app(*, time_limit: float = 300.0, max_jobs: int = 2, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The explorer as an ASGI app; training jobs are killed after ``time_limit`` seconds, and at most
    ``max_jobs`` run at once (one per client). ``allowed_hosts``: the only Host headers answered
    (a page of another site that resolves its name to 127.0.0.1 is refused: DNS rebinding); None
    answers any. Cross-site pages cannot post either: the API takes only ``application/json``,
    which a browser sends cross-site only after a CORS preflight that this server never grants."""
    jobs = TrainingJobs(time_limit=time_limit, max_jobs=max_jobs)
    script = plotly_js()

    @asynccontextmanager
    async def lifespan(app):
        yield
        jobs.close()

    app = FastAPI(title="ntkprior explore", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.jobs = jobs
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.exception_handler(RequestValidationError)
    async def refused(request, exc):
        return _error(422, _validation_message(exc))

    @app.exception_handler(ValueError)
    async def bad_value(request, exc):
        return _error(400, str(exc))

    @app.exception_handler(Exception)
    async def failed(request, exc):
        return _error(500, f"internal error ({type(exc).__name__}): {exc}")

    @app.get("/", include_in_schema=False)
    def index(request: Request):
        return _for_client(request, lambda _: FileResponse(STATIC / "index.html",
                                                           headers={"Cache-Control": "no-store"}))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    @app.get("/plotly.min.js", include_in_schema=False)
    def plotly():
        return FileResponse(script, media_type="text/javascript")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/options")
    def options():
        return views.options()

    @app.post("/api/spec")
    def spec(req: rq.SpecRequest):
        return views.spec_view(req)

    @app.post("/api/posterior")
    def posterior(req: rq.PosteriorRequest):
        return _json(views.posterior_view(req))

    @app.post("/api/eigen")
    def eigen(req: rq.EigenRequest):
        return _json(views.eigen_view(req))

    @app.post("/api/candidate")
    def candidate(req: rq.CandidateRequest):
        return _json(views.candidate_view(req))

    @app.post("/api/csv")
    def csv(req: rq.CsvRequest):
        return views.csv_view(req)

    @app.post("/api/train")
    def train_start(req: rq.TrainRequest, request: Request):
        plan = views.training_plan(req)
        return _for_client(request, lambda client: _json(jobs.start(client, plan)))

    @app.get("/api/train")
    def train_status(request: Request):
        return _for_client(request, lambda client: _json(jobs.status(client)))

    @app.delete("/api/train")
    def train_cancel(request: Request):
        return _for_client(request, lambda client: _json(jobs.cancel(client)))

    return app


def _json(payload: dict) -> JSONResponse:
    """Non-finite floats (an infinite stability limit, say) as strings: JSON has no inf."""
    return JSONResponse(jsonable(payload))
