"""The scoring script of an Azure ML managed online deployment: one model version of one
dataset, served exactly as the serve function serves it.

Azure ML's inference server (azureml-inference-server-http, in the deployment's
environment) loads this file, calls ``init()`` once per worker and ``run(raw_data)`` for
each request to the endpoint's ``/score`` (fact azure.serving.scoring_script_contract):
``raw_data`` is the request body as text; ``run`` may take ``request_headers``; a plain
return value is answered as 200 JSON, a Flask ``Response`` (``AMLResponse``) keeps its
status, and an exception is a 500.

Nothing here predicts: the body goes, in-process, to ``POST /predict`` of the very
FastAPI app the Lambda and the Functions host run (``shared.serve_app.model_app``, with
``shared.capture.InferenceCapture``), and its status, body and headers come back as the
``AMLResponse``. So a wrong column is the same 422 naming it, a model that cannot load
the same 503, a failing model the same 500 (which Azure Monitor counts as the
deployment's 5xx, the canary's evidence), and captured rows land where the drift check
reads them.

The model is not an Azure ML model asset (``AZUREML_MODEL_DIR`` is unused): the version
is the one ``DHOW_SERVE_MODEL_VERSION`` names, fetched from the registry and verified
against its recorded hash, as on Lambda.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, NamedTuple

from shared.errors import ConfigError, DhowError
from shared.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shared.capture import InferenceCapture
    from shared.wiring import Ports

log = logging.getLogger(__name__)

PREDICT_PATH = "/predict"
HEALTH_PATH = "/health"
# The headers of the app's answer that the endpoint's client sees too.
_PASSED_HEADERS = ("content-type", "x-dhow-model-version")


# The server executes this file as a module it never puts in sys.modules: a dataclass
# defined here would fail there (dataclasses looks its module up), a NamedTuple does not.
class Scored(NamedTuple):
    """One answer of the serve app: what ``run`` hands the inference server."""

    status: int
    body: bytes
    headers: dict[str, str]


class EndpointScorer:
    """The serve app of one dataset and version, called in-process with each request."""

    def __init__(self, app: FastAPI, capture: InferenceCapture | None) -> None:
        self._app = app
        self._capture = capture

    @classmethod
    def build(cls, settings: Settings, ports: Ports | None = None) -> EndpointScorer:
        """The app ``build_serve_app`` would build, keeping the capture at hand: a
        deployment has no ASGI lifespan to flush it, so the scorer does."""
        from shared.capture import InferenceCapture
        from shared.serve_app import model_app
        from shared.specs import load_spec
        from shared.topology import build_topology
        from shared.wiring import build_model_registry, build_ports

        if not settings.serve_dataset:
            raise ConfigError(
                "the online deployment does not know its dataset",
                hint="the deployer sets DHOW_SERVE_DATASET and DHOW_SERVE_MODEL_VERSION on "
                "each deployment (shared/adapters/azure_serving.py)",
            )
        topo = build_topology(settings.stage)
        # The deployment is given storage settings only, and publishes nothing.
        p = ports or build_ports(settings, topo, publishing=False)
        spec = load_spec(settings.serve_dataset, settings.specs_dir)
        capture = InferenceCapture.for_spec(p.store, topo.bucket("capture").name, spec)
        app = model_app(
            spec, p.store, build_model_registry(settings, p), settings.serve_model_version, capture
        )
        return cls(app, capture)

    def score(self, raw_data: str | bytes, headers: dict[str, str] | None = None) -> Scored:
        """``raw_data`` posted to the app's ``/predict``; its answer, whatever its status.

        A body over the serve app's cap is answered here, as the app answers it (413,
        ``body_too_large``), before it is encoded or handed on: the inference server
        reads any body whole and sets no limit of its own."""
        from shared.serving import MAX_BODY_BYTES, BodyTooLarge

        # A UTF-8 string has at least as many bytes as characters: one too long is
        # refused without encoding it (which would copy it once more).
        if len(raw_data) > MAX_BODY_BYTES:
            return _refused(BodyTooLarge(len(raw_data)))
        body = raw_data.encode() if isinstance(raw_data, str) else raw_data
        if len(body) > MAX_BODY_BYTES:
            return _refused(BodyTooLarge(len(body)))
        scored = asyncio.run(self._post(body, headers or {}))
        if self._capture is not None:
            # A worker has no timer of its own: a batch that waited long enough goes now.
            self._capture.flush_if_due()
        return scored

    def warm(self) -> Scored:
        """Load the model now (the app's ``GET /health`` loads it), before the endpoint
        takes requests: Azure Monitor times each request itself, so a model loaded by
        the first request would be that request's latency and the candidate's p99. A
        model that cannot load is retried by the next request, which answers 503."""
        scored = asyncio.run(self._post(b"", {}, method="GET", path=HEALTH_PATH))
        if scored.status != 200:
            log.warning("the model did not load at init (%s): %s", scored.status, scored.body)
        return scored

    def flush(self) -> None:
        if self._capture is not None:
            self._capture.flush()

    async def _post(
        self, body: bytes, headers: dict[str, str], method: str = "POST", path: str = ""
    ) -> Scored:
        path = path or PREDICT_PATH
        request_headers = [(b"content-type", b"application/json")]
        request_headers += [
            (k.lower().encode("latin-1"), str(v).encode("latin-1"))
            for k, v in headers.items()
            if k.lower() == "x-request-id"
        ]
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": request_headers,
            "client": None,
            "server": None,
        }
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        status, out, answer = 500, bytearray(), {}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for k, v in message.get("headers", []):
                    name = k.decode("latin-1").lower()
                    if name in _PASSED_HEADERS:
                        answer[name] = v.decode("latin-1")
            elif message["type"] == "http.response.body":
                out.extend(message.get("body", b""))

        await self._app(scope, receive, send)
        return Scored(status, bytes(out), answer)


def _refused(exc: DhowError) -> Scored:
    """The 413 the serve app answers for a body over its cap (``shared.serve_app``)."""
    body = json.dumps({"error": exc.as_dict()}).encode()
    return Scored(413, body, {"content-type": "application/json"})


_SCORER: EndpointScorer | None = None


def init() -> None:
    """Called once per worker by the inference server: build the app, load the model
    (out of every request's latency, see ``EndpointScorer.warm``) and flush captured rows
    when the worker stops."""
    global _SCORER
    logging.getLogger().setLevel(logging.INFO)
    _SCORER = EndpointScorer.build(Settings.from_env())
    atexit.register(_SCORER.flush)
    _SCORER.warm()


def run(raw_data: str, request_headers: dict[str, str] | None = None) -> Any:
    """Called per request by the inference server: the serve app's answer, status kept."""
    from azureml_inference_server_http.api.aml_response import AMLResponse

    if _SCORER is None:
        raise RuntimeError("init() has not run")
    scored = _SCORER.score(raw_data, request_headers)
    # The server looks the content type up under this exact spelling.
    headers = {("Content-Type" if k == "content-type" else k): v for k, v in scored.headers.items()}
    return AMLResponse(scored.body.decode(), scored.status, headers)
