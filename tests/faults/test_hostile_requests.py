"""Hostile requests to the serve endpoint: each is answered with a 4xx and a reason, by
every entry point the app runs behind (the ASGI stack as uvicorn runs it, the Lambda
through mangum, the Azure ML scoring script, the Functions host's ASGI middleware), in
bounded time and size; a slow prediction never holds up the health probe."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from shared.adapters.lineage_registry import LineageModelRegistry
from shared.artifacts import ARTIFACT_SHA256
from shared.cloud_facts import value
from shared.events import ObjectRef
from shared.jobs.score_online import EndpointScorer
from shared.serve_app import create_app
from shared.serving import (
    MAX_BATCH_ROWS,
    MAX_BODY_BYTES,
    MAX_LISTED_ERRORS,
    LoadedModel,
    ModelSlot,
    load_model_version,
)
from shared.specs import load_spec
from shared.validation import validate_file
from tests.faults.ledger import Ledger
from tests.helpers import ROOT, MemoryLineage, MemoryStore, load_event, train_artifact
from tests.unit.test_serving import ROW

SPEC = load_spec("customers")
MODELS = "dhow-t-models"
ROW_JSON = json.dumps(ROW)
DEEP = 100_000


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> ModelSlot:
    """A slot holding the loaded champion, as a warm container has it."""
    base = tmp_path_factory.mktemp("hostile-serve")
    run = validate_file(ROOT / "localstack/samples/customers.csv", "csv", SPEC, out_dir=base)
    assert run.curated is not None
    artifact = train_artifact(base / "m", run.curated, n_estimators=20, max_depth=2)
    store, registry = MemoryStore(), LineageModelRegistry(MemoryLineage())
    ref = ObjectRef(container=MODELS, key="models/customers/job-1/output/model.tar.gz")
    store.put_bytes(ref, artifact.read_bytes())
    registry.register(
        "customers",
        artifact=f"s3://{ref.uri}",
        image="local:shared.trainer",
        metrics={"roc_auc": 0.7},
        lineage={ARTIFACT_SHA256: hashlib.sha256(artifact.read_bytes()).hexdigest()},
        status="Approved",
    )
    slot = ModelSlot(lambda: load_model_version(store, registry, "customers", None))
    slot.get()
    return slot


@pytest.fixture
def lambda_loop() -> Iterator[None]:
    """The current event loop mangum asks for, as Lambda's Python runtime has one."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


class _LambdaContext:  # what mangum reads of Lambda's context: nothing but itself
    function_name = "dhow-t-serve-customers"
    function_version = "8"
    aws_request_id = "req-1"


def via_asgi(slot: ModelSlot, body: bytes) -> tuple[int, bytes]:
    # raise_server_exceptions=False: an uncaught error is the 500 uvicorn answers.
    with TestClient(create_app(SPEC, slot, None), raise_server_exceptions=False) as c:
        r = c.post("/predict", content=body, headers={"content-type": "application/json"})
    return r.status_code, r.content


def via_lambda(slot: ModelSlot, body: bytes) -> tuple[int, bytes]:
    from mangum import Mangum

    event = copy.deepcopy(load_event("apigw_http_v2_predict.json"))
    event["body"] = body.decode()
    event["headers"]["content-length"] = str(len(body))
    handler = Mangum(create_app(SPEC, slot, None), lifespan="off")
    answer = handler(event, _LambdaContext())  # type: ignore[arg-type]
    return int(answer["statusCode"]), str(answer["body"]).encode()


def via_azure_ml(slot: ModelSlot, body: bytes) -> tuple[int, bytes]:
    try:
        scored = EndpointScorer(create_app(SPEC, slot, None), None).score(body.decode())
    except Exception:  # run() raising is answered 500 by the inference server
        return value("azure.serving.scoring_script_contract")["exception_status"], b""
    return scored.status, scored.body


def via_functions(slot: ModelSlot, body: bytes) -> tuple[int, bytes]:
    import azure.functions as func

    req = func.HttpRequest(
        method="POST",
        url="http://localhost/predict",
        headers={"content-type": "application/json"},
        body=body,
    )
    middleware = func.AsgiMiddleware(create_app(SPEC, slot, None))  # type: ignore[no-untyped-call]
    try:
        response = asyncio.run(middleware.handle_async(req))
    except Exception:  # the Functions host answers an unhandled exception with a 500
        return 500, b""
    return int(response.status_code), response.get_body()


ENTRY_POINTS: dict[str, Callable[[ModelSlot, bytes], tuple[int, bytes]]] = {
    "asgi": via_asgi,
    "lambda": via_lambda,
    "azure-ml": via_azure_ml,
    "functions": via_functions,
}


def _row(**changes: str) -> bytes:
    """ROW with the given columns' raw JSON text put in place of their values."""
    parts = [
        f"{json.dumps(k)}: {changes[k] if k in changes else json.dumps(v)}" for k, v in ROW.items()
    ]
    return ("{" + ", ".join(parts) + "}").encode()


HOSTILE: dict[str, bytes] = {
    "body nested 100,000 deep": b"[" * DEEP + b"]" * DEEP,
    "a column nested 100,000 deep": _row(age="[" * DEEP + "]" * DEEP),
    "monthly_spend_aed 1e400": _row(monthly_spend_aed="1e400"),
    "monthly_spend_aed NaN": _row(monthly_spend_aed="NaN"),
    "monthly_spend_aed -Infinity": _row(monthly_spend_aed="-Infinity"),
    'age "41" (a numeric string)': _row(age='"41"'),
    "age 41.0 (a float for an integer)": _row(age="41.0"),
    'monthly_spend_aed "120.5"': _row(monthly_spend_aed='"120.5"'),
    "has_mobile_app 1 (a number for a bool)": _row(has_mobile_app="1"),
    "age of 5,000 digits": _row(age="9" * 5000),
    # pydantic would build (and list, slowly) an error for each unknown column
    "a row of 200,000 unknown columns": (
        ROW_JSON[:-1] + "".join(f', "c{i}": 0' for i in range(200_000)) + "}"
    ).encode(),
}


@pytest.mark.usefixtures("lambda_loop")
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_body_is_a_422_naming_the_problem(
    champion: ModelSlot, ledger: Ledger, entry: str, name: str
) -> None:
    t0 = time.perf_counter()
    status, body = ENTRY_POINTS[entry](champion, HOSTILE[name])
    elapsed = time.perf_counter() - t0
    ledger.answer(f"serve /predict ({entry}): {name}", str(status))
    assert status == 422, body[:300]
    answer = json.loads(body)
    assert answer["error"]["reason"] == "request_invalid"
    assert answer["detail"], answer
    assert elapsed < 10.0


@pytest.mark.usefixtures("lambda_loop")
@pytest.mark.parametrize("entry", ["asgi", "azure-ml", "functions"])
def test_a_body_larger_than_lambda_takes_is_a_413_on_every_cloud(
    champion: ModelSlot, ledger: Ledger, entry: str
) -> None:
    # Lambda's synchronous invoke carries at most this much (the whole event, so the body
    # less), and API Gateway's HTTP API payload cap is above it: on AWS no larger body
    # reaches the app. Azure ML's inference server and the Functions host take far more,
    # so the app and the scoring script refuse it themselves, with the same answer.
    limit = value("aws.lambda.sync_invoke_payload")
    assert value("aws.apigateway.http_api_payload")["max_mb"] >= limit["max_mb"]
    assert limit["max_mb"] * 1_000_000 >= MAX_BODY_BYTES
    # Valid rows, fewer than the batch cap, padded with a long identifier: without a cap
    # the whole body would be parsed, validated and predicted.
    padded = {**ROW, "customer_id": "C" * 900}
    n = MAX_BODY_BYTES // len(json.dumps(padded)) + 50
    assert n < MAX_BATCH_ROWS
    body = json.dumps([padded] * n).encode()
    assert len(body) > MAX_BODY_BYTES
    status, answer = ENTRY_POINTS[entry](champion, body)
    ledger.answer(f"serve /predict ({entry}): body of {len(body):,} bytes", str(status))
    assert status == 413, answer[:300]
    assert json.loads(answer)["error"]["reason"] == "body_too_large"


def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_read(
    champion: ModelSlot, ledger: Ledger
) -> None:
    received: list[int] = []
    app = create_app(SPEC, champion, None)

    async def call() -> int:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            received.append(1)
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": b"[", "more_body": True}

        status = 0

        async def send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict",
            "raw_path": b"/predict",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(MAX_BODY_BYTES + 1).encode()),
            ],
            "client": None,
            "server": None,
        }
        await app(scope, receive, send)
        return status

    status = asyncio.run(call())
    ledger.answer("serve /predict: content-length over the cap", str(status))
    assert status == 413
    assert received == []  # not one chunk read


@pytest.mark.usefixtures("lambda_loop")
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_ten_thousand_bad_rows_get_a_bounded_error_list_that_counts_them_all(
    champion: ModelSlot, ledger: Ledger, entry: str
) -> None:
    bad = [{**ROW, "age": "old", "segment": "platinum"}] * MAX_BATCH_ROWS
    status, body = ENTRY_POINTS[entry](champion, json.dumps(bad).encode())
    ledger.answer(f"serve /predict ({entry}): {MAX_BATCH_ROWS:,} bad rows", str(status))
    assert status == 422
    answer = json.loads(body)
    assert len(answer["detail"]) == MAX_LISTED_ERRORS
    assert answer["error_count"] == 2 * MAX_BATCH_ROWS
    assert answer["errors_not_listed"] == 2 * MAX_BATCH_ROWS - MAX_LISTED_ERRORS
    assert answer["detail"][0]["loc"] == ["body", 0, "age"]
    assert len(body) < 64 * 1024


def test_model_tells_a_caller_what_serves_not_where_it_is_stored(
    champion: ModelSlot, ledger: Ledger
) -> None:
    with TestClient(create_app(SPEC, champion, None)) as c:
        r = c.get("/model")
    text = r.text
    leaked = [s for s in (MODELS, "s3://", "models/customers/", "model.tar.gz") if s in text]
    ledger.answer("serve /model: storage locations asked for", "leaked" if leaked else "none")
    assert r.status_code == 200
    assert leaked == []
    info = r.json()
    loaded = champion.get()
    assert info["dataset"] == "customers"
    assert info["model_version"] == str(loaded.version.version)
    assert info["artifact_sha256"] == loaded.artifact_sha256
    assert "artifact" not in info
    assert "lineage" not in info


class _SlowModel:
    """The champion's model, taking ``seconds`` over each prediction (a big batch)."""

    def __init__(self, model: Any, seconds: float) -> None:
        self.model, self.seconds = model, seconds

    def predict_proba(self, x: Any) -> Any:
        time.sleep(self.seconds)
        return self.model.predict_proba(x)


async def _asgi_pair(app: Any, slow_first_s: float) -> tuple[tuple[int, float], ...]:
    """A prediction and, once it is under way, a health probe, on one event loop as
    uvicorn serves them: each answer's status and when it came."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://serve") as c:
        t0 = time.perf_counter()

        async def predict() -> tuple[int, float]:
            r = await c.post("/predict", json=ROW)
            return r.status_code, time.perf_counter() - t0

        async def health() -> tuple[int, float]:
            await asyncio.sleep(slow_first_s)
            r = await c.get("/health")
            return r.status_code, time.perf_counter() - t0

        return tuple(await asyncio.gather(predict(), health()))


async def _functions_pair(app: Any, slow_first_s: float) -> tuple[tuple[int, float], ...]:
    """The same through the Functions host's ASGI middleware, which awaits the app on the
    worker's one event loop."""
    import azure.functions as func

    middleware = func.AsgiMiddleware(app)  # type: ignore[no-untyped-call]
    t0 = time.perf_counter()

    async def call(method: str, path: str, body: bytes, wait: float) -> tuple[int, float]:
        await asyncio.sleep(wait)
        req = func.HttpRequest(
            method=method,
            url=f"http://localhost{path}",
            headers={"content-type": "application/json"},
            body=body,
        )
        response = await middleware.handle_async(req)
        return int(response.status_code), time.perf_counter() - t0

    return tuple(
        await asyncio.gather(
            call("POST", "/predict", ROW_JSON.encode(), 0.0),
            call("GET", "/health", b"", slow_first_s),
        )
    )


@pytest.mark.parametrize("entry", ["asgi", "functions"])
def test_a_slow_prediction_does_not_hold_up_the_health_probe(
    champion: ModelSlot, ledger: Ledger, entry: str
) -> None:
    loaded = champion.get()
    slow_s = 1.5
    slow = LoadedModel(
        loaded.dataset,
        loaded.version,
        loaded.artifact_sha256,
        loaded.card,
        _SlowModel(loaded.model, slow_s),
    )
    slot = ModelSlot(lambda: slow)
    slot.get()
    app = create_app(SPEC, slot, None)
    pair = _asgi_pair if entry == "asgi" else _functions_pair
    (p_status, p_done), (h_status, h_done) = asyncio.run(pair(app, 0.2))
    ledger.fault(f"serve:predict ({entry})", f"a prediction that takes {slow_s}s")
    ledger.action(f"health answered during a slow prediction ({entry})", int(h_done < p_done))
    assert (p_status, h_status) == (200, 200)
    assert p_done >= slow_s
    assert h_done < p_done - 0.5  # answered while the prediction still ran
