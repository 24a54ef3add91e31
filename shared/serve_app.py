"""The serve function: one FastAPI app per dataset, the same on Lambda (mangum), Azure
Functions (ASGI) and locally (uvicorn).

- ``POST /predict``: one row (a JSON object) or a batch (a JSON array of them),
  checked against the spec's columns; a wrong column or type is a 422 naming it.
- ``GET /health``: 200 once the model is loaded, 503 with the reason otherwise.
- ``GET /model``: the served version, its metrics and lineage.
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
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.canary import JUDGED_PATH, EmfRequestMetrics
from shared.capture import InferenceCapture
from shared.errors import DhowError
from shared.ports import ModelRegistry, ObjectStore
from shared.serving import (
    MAX_BATCH_ROWS,
    LoadedModel,
    ModelSlot,
    PredictResponse,
    load_model_version,
    request_row_model,
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
    row_model = request_row_model(spec)
    rows_adapter = TypeAdapter(list[row_model])  # type: ignore[valid-type]
    row_schema = row_model.model_json_schema(ref_template="#/components/schemas/{model}")

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

    @app.get("/health")
    def health() -> JSONResponse:
        model = _model_of(slot)
        return JSONResponse(
            {
                "status": "ok",
                "dataset": spec.name,
                "model_version": str(model.version.version),
                "capture": capture.snapshot() if capture else None,
            }
        )

    @app.get("/model")
    def model_info() -> JSONResponse:
        model = _model_of(slot)
        v = model.version
        return JSONResponse(
            {
                "dataset": spec.name,
                "model_version": str(v.version),
                "status": v.status,
                "artifact": v.artifact,
                "artifact_sha256": model.artifact_sha256,
                "metrics": v.metrics,
                "lineage": v.lineage,
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
        try:
            body: Any = await request.json()
        except ValueError:
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body",), "msg": "body is not JSON"}]
            ) from None
        single = isinstance(body, dict)
        batch = [body] if single else body
        if not isinstance(batch, list) or not batch:
            raise RequestValidationError(
                [
                    {
                        "type": "body_shape",
                        "loc": ("body",),
                        "msg": "send one row (an object) or a non-empty array of rows",
                    }
                ]
            )
        if len(batch) > MAX_BATCH_ROWS:
            raise RequestValidationError(
                [
                    {
                        "type": "too_long",
                        "loc": ("body",),
                        "msg": f"at most {MAX_BATCH_ROWS} rows a request; split the batch",
                    }
                ]
            )
        try:
            rows: list[BaseModel] = rows_adapter.validate_python(batch)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            for e in errors:  # name the body, and the row only when a batch was sent
                e["loc"] = ("body", *(e["loc"][1:] if single else e["loc"]))
            raise RequestValidationError(errors) from None
        model = _model_of(slot)
        records = [r.model_dump() for r in rows]
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
                    reason="prediction_failed",
                )
            )
            return _error(500, err)
        version = str(model.version.version)
        if capture is not None:
            request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
            capture.record(records, predictions, version, request_id)
        payload = PredictResponse(
            model_version=version,
            predictions=predictions,
            scores=scores,
            labels=model.card.get("labels"),
        )
        return JSONResponse(payload.model_dump(), headers={MODEL_VERSION_HEADER: version})

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
