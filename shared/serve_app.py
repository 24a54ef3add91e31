"""The serve function: one FastAPI app per dataset, the same on Lambda (mangum), Azure
Functions (ASGI) and locally (uvicorn).

- ``POST /predict``: one row (a JSON object) or a batch (a JSON array of them),
  checked against the spec's columns (``shared.serving.RequestRows``); a wrong column
  or type is a 422 naming it, a body over ``MAX_BODY_BYTES`` a 413. A value past a
  bound or outside a category is a 422 too (``serving.out_of_domain: reject``), or is
  predicted and flagged (``accept``): the answer's ``out_of_domain`` lists each row's
  flags, which are captured with the row and counted. The work runs in the threadpool:
  a slow prediction never holds up the event loop.
- ``GET /health``: 200 once the model is loaded, 503 with the reason otherwise; the
  capture's counters and the rows served out of the domain since this instance started.
- ``GET /model``: the served version, its artifact's hash and its features (never where
  it is stored: every caller of the endpoint may ask).
- ``/docs`` and ``/openapi.json``: the request contract, from the spec.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shared.canary import JUDGED_PATH, EmfRequestMetrics
from shared.capture import InferenceCapture
from shared.errors import DhowError
from shared.ports import ModelRegistry, ObjectStore
from shared.reasons import Reason
from shared.serving import (
    MAX_BATCH_ROWS,
    BodyTooLarge,
    DomainCounter,
    LoadedModel,
    ModelSlot,
    PredictResponse,
    RequestInvalid,
    RequestRows,
    check_body_size,
    load_model_version,
)
from shared.specs import DatasetSpec

log = logging.getLogger(__name__)

MODEL_VERSION_HEADER = "x-dhow-model-version"

# What the app tells about each judged request: its status and latency in milliseconds.
RequestMetrics = Callable[[int, float], None]
_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_ASGI = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class _LoadTime:
    """The milliseconds one judged request spent loading the model (or waiting for
    another request to load it)."""

    __slots__ = ("ms",)

    def __init__(self) -> None:
        self.ms = 0.0


# Set by _JudgedRequests for the request it times. A holder, not a float: the handler
# may run in a copy of the context (a thread, a task), and must still charge this one.
_LOADING: contextvars.ContextVar[_LoadTime | None] = contextvars.ContextVar(
    "dhow_model_load_time", default=None
)


def _model_of(slot: ModelSlot) -> LoadedModel:
    """The slot's model; the time a load takes is charged to the judged request, so the
    canary's latency is the model's answer and never its cold start (``shared.canary``)."""
    loaded = slot.loaded
    if loaded is not None:
        return loaded
    t0 = time.perf_counter()
    try:
        return slot.get()
    finally:
        charged = _LOADING.get()
        if charged is not None:
            charged.ms += (time.perf_counter() - t0) * 1000


class _JudgedRequests:
    """Outermost ASGI layer: the status and time of every ``/predict`` request, an
    exception counted as the 500 that mangum or the server answers for it, the time
    spent loading the model left out."""

    def __init__(self, app: _ASGI, metrics: RequestMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        # The path within the app, as its router sees it (behind a mount or the local
        # router, the part before it is the root path).
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if scope["type"] != "http" or not path.startswith(JUDGED_PATH):
            await self.app(scope, receive, send)
            return
        status = 500
        loading = _LoadTime()
        token = _LOADING.set(loading)
        t0 = time.perf_counter()

        async def watch(message: _Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            status = 500
            raise
        finally:
            elapsed_ms = (time.perf_counter() - t0) * 1000
            _LOADING.reset(token)
            try:
                self.metrics(status, max(0.0, elapsed_ms - loading.ms))
            except Exception:  # a metric must never fail a prediction
                log.exception("could not record the request's metrics")


def _error(status: int, exc: DhowError) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": exc.as_dict()})


async def _capped_body(request: Request) -> bytes:
    """The request's body, refused (``BodyTooLarge``) once it passes the cap: a declared
    length over it before a byte is read, a streamed body as soon as it grows past it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        check_body_size(int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        check_body_size(len(body))
    return bytes(body)


def create_app(
    spec: DatasetSpec,
    slot: ModelSlot,
    capture: InferenceCapture | None = None,
    metrics: RequestMetrics | None = None,
) -> FastAPI:
    """The serve app of one dataset, serving the model in ``slot``.

    ``metrics`` hears every ``/predict`` answer; by default, on Lambda, an EMF line per
    request for the canary's alarms (``shared.canary``), and nothing elsewhere."""
    metrics = metrics or EmfRequestMetrics.from_env(os.environ)
    contract = RequestRows(spec)
    out_of_domain = DomainCounter()
    row_schema = contract.row_model.model_json_schema(ref_template="#/components/schemas/{model}")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if capture is not None:  # what is buffered is written when the server stops
            capture.flush()

    app = FastAPI(
        lifespan=lifespan,
        title=f"Dhow serve: {spec.name}",
        version=spec.spec_version,
        description=f"Predicts `{spec.target}` ({spec.task}) for dataset `{spec.name}`.",
    )

    # A Dhow error that reaches here is the model failing to load (none approved, a
    # changed artifact): the service is unavailable, with the reason and what to do.
    @app.exception_handler(DhowError)
    async def model_unavailable(_request: Request, exc: DhowError) -> JSONResponse:
        return _error(503, exc)

    # The caller's own mistakes (Starlette picks the handler of the most specific class).
    @app.exception_handler(BodyTooLarge)
    async def body_too_large(_request: Request, exc: BodyTooLarge) -> JSONResponse:
        return _error(413, exc)

    @app.exception_handler(RequestInvalid)
    async def request_invalid(_request: Request, exc: RequestInvalid) -> JSONResponse:
        return JSONResponse(status_code=422, content=exc.as_body())

    @app.get("/health")
    def health() -> JSONResponse:
        model = _model_of(slot)
        flagged = out_of_domain.snapshot()
        return JSONResponse(
            {
                "status": "ok",
                "dataset": spec.name,
                "model_version": str(model.version.version),
                "capture": capture.snapshot() if capture else None,
                # Rows answered while outside the spec's bounds or categories (accept),
                # per instance: each Lambda environment or replica counts its own.
                "out_of_domain": contract.out_of_domain,
                "out_of_domain_rows": flagged["rows"],
                "out_of_domain_by_column": flagged["by_column"],
            }
        )

    @app.get("/model")
    def model_info() -> JSONResponse:
        model = _model_of(slot)
        v = model.version
        # What a caller needs to know what answers it; not the artifact's location or the
        # lineage (bucket keys, job names), which are the registry's to tell its readers.
        return JSONResponse(
            {
                "dataset": spec.name,
                "model_version": str(v.version),
                "status": v.status,
                "artifact_sha256": model.artifact_sha256,
                "metrics": v.metrics,
                "features": model.features,
                "task": model.card.get("task"),
                "labels": model.card.get("labels"),
            }
        )

    @app.post(
        "/predict",
        response_model=PredictResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                row_schema,
                                {"type": "array", "items": row_schema, "maxItems": MAX_BATCH_ROWS},
                            ]
                        }
                    }
                },
            }
        },
    )
    async def predict(request: Request) -> JSONResponse:
        body = await _capped_body(request)
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        # Parsing, validation, the model's load and its prediction are all blocking work:
        # in the threadpool, so the event loop (uvicorn's, the Functions host's) keeps
        # answering /health and other requests meanwhile.
        return await run_in_threadpool(answer, body, request_id)

    def answer(body: bytes, request_id: str) -> JSONResponse:
        rows = contract.parse(body)
        model = _model_of(slot)
        records = [r.model_dump() for r in rows]
        flags = contract.flags(records)
        try:
            predictions, scores = model.predict(records)
        except Exception as exc:
            log.exception("prediction failed on model v%s", model.version.version)
            err = (
                exc
                if isinstance(exc, DhowError)
                else DhowError(
                    f"model v{model.version.version} failed on this request: {type(exc).__name__}",
                    hint="the deployment's alarms count this; see the function's log",
                    reason=Reason.PREDICTION_FAILED,
                )
            )
            return _error(500, err)
        version = str(model.version.version)
        if flags is not None:  # counted once answered: these rows were served
            out_of_domain.add(flags)
        if capture is not None:
            capture.record(records, predictions, version, request_id, flags)
        payload = PredictResponse(
            model_version=version,
            predictions=predictions,
            scores=scores,
            labels=model.card.get("labels"),
            out_of_domain=flags,
        )
        # Under reject the answer is what it always was: no out_of_domain key.
        shown = payload.model_dump(exclude={"out_of_domain"} if flags is None else None)
        return JSONResponse(shown, headers={MODEL_VERSION_HEADER: version})

    if metrics is not None:
        app.add_middleware(_JudgedRequests, metrics=metrics)
    return app


def model_app(
    spec: DatasetSpec,
    store: ObjectStore,
    registry: ModelRegistry,
    version: int | None,
    capture: InferenceCapture | None,
    metrics: RequestMetrics | None = None,
) -> FastAPI:
    """The serve app for model ``version`` of ``spec``'s dataset (the champion if None),
    loaded from the registry on first use and verified against its recorded hash.
    ``metrics`` as in ``create_app`` (the local router passes its own)."""
    return create_app(
        spec,
        ModelSlot(lambda: load_model_version(store, registry, spec.name, version)),
        capture,
        metrics,
    )
