"""The serve app with a real trained model, the moto model registry and in-memory storage."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from moto import mock_aws

from shared.adapters.aws import aws_client
from shared.adapters.sagemaker_registry import SageMakerModelRegistry
from shared.artifacts import ARTIFACT_SHA256, sha256_file
from shared.capture import InferenceCapture, read_captures
from shared.cloud_facts import value
from shared.events import ObjectRef
from shared.serve_app import MODEL_VERSION_HEADER, create_app, model_app
from shared.serving import ModelSlot, load_model_version
from shared.settings import Settings
from shared.specs import load_spec
from shared.validation import validate_file
from tests.helpers import ROOT, MemoryStore, broken_model, load_event, train_artifact

MODELS, CAPTURE = "dhow-t-models", "dhow-t-capture"
ROW = {
    "customer_id": "C-1",
    "age": 41,
    "tenure_months": 3,
    "monthly_spend_aed": 120.5,
    "support_calls": 7,
    "segment": "bronze",
    "emirate": "dubai",
    "has_mobile_app": False,
}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("serve-artifact")
    run = validate_file(
        ROOT / "localstack/samples/customers.csv", "csv", load_spec("customers"), out_dir=base
    )
    assert run.curated is not None
    return train_artifact(base / "m", run.curated, n_estimators=50, max_depth=2)


@pytest.fixture
def world(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        store = MemoryStore()
        registry = SageMakerModelRegistry(aws_client("sagemaker", Settings()), stage="t")
        ref = ObjectRef(container=MODELS, key="models/customers/job-1/output/model.tar.gz")
        store.put_bytes(ref, artifact.read_bytes())
        registry.register(
            "customers",
            artifact=f"s3://{ref.uri}",
            image="local:shared.trainer",
            metrics={"roc_auc": 0.7},
            lineage={ARTIFACT_SHA256: sha256_file(artifact), "sha256": "ab" * 32},
            status="Approved",
        )
        yield {"store": store, "registry": registry, "ref": ref}


def client_for(world: dict[str, Any], capture: InferenceCapture | None = None) -> TestClient:
    return TestClient(
        model_app(load_spec("customers"), world["store"], world["registry"], None, capture)
    )


def test_one_row_and_a_batch_are_predicted_by_the_champion(world: dict[str, Any]) -> None:
    with client_for(world) as c:
        one = c.post("/predict", json=ROW)
        assert one.status_code == 200, one.text
        body = one.json()
        assert body["model_version"] == "1"
        assert one.headers[MODEL_VERSION_HEADER] == "1"
        assert body["labels"] == ["0", "1"]
        assert len(body["predictions"]) == 1
        assert body["predictions"][0] in ("0", "1")
        assert abs(sum(body["scores"][0]) - 1.0) < 1e-6
        many = c.post("/predict", json=[ROW, {**ROW, "age": 70}, {**ROW, "customer_id": None}])
        assert many.status_code == 200
        assert len(many.json()["predictions"]) == 3
        health = c.get("/health").json()
        assert (health["status"], health["model_version"]) == ("ok", "1")
        info = c.get("/model").json()
        assert (
            info["artifact_sha256"]
            == world["registry"].versions("customers")[0].lineage[ARTIFACT_SHA256]
        )
        assert "customer_id" not in info["features"]  # an identifier is never a feature
        # Every caller may ask /model: it names what serves, never where it is stored.
        assert MODELS not in one.text + c.get("/model").text
        assert not {"artifact", "lineage"} & set(info)


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({**ROW, "agee": 41}, ["body", "agee"], "extra_forbidden"),
        ({k: v for k, v in ROW.items() if k != "age"}, ["body", "age"], "missing"),
        ({**ROW, "age": "forty"}, ["body", "age"], "int_type"),
        ({**ROW, "age": "41"}, ["body", "age"], "int_type"),  # strict: no numeric strings
        ({**ROW, "has_mobile_app": 1}, ["body", "has_mobile_app"], "bool_type"),
        ({**ROW, "age": 7}, ["body", "age"], "greater_than_equal"),
        ({**ROW, "segment": "platinum"}, ["body", "segment"], "literal_error"),
        ([ROW, {**ROW, "tenure_months": "x"}], ["body", 1, "tenure_months"], "int_type"),
        ([], ["body"], "body_shape"),
    ],
)
def test_a_wrong_column_or_type_is_a_422_that_names_it(
    world: dict[str, Any], body: Any, loc: list[Any], kind: str
) -> None:
    with client_for(world) as c:
        r = c.post("/predict", json=body)
    assert r.status_code == 422
    assert {"loc": loc, "type": kind} in [
        {"loc": e["loc"], "type": e["type"]} for e in r.json()["detail"]
    ]


def test_the_request_contract_is_strict_but_takes_a_datetime_as_json_sends_it() -> None:
    """Strict types refuse what a caller's program got wrong ("41", 1 for a bool, NaN),
    but JSON has no datetime: an ISO 8601 string is how one arrives, and is taken."""
    from shared.serving import RequestInvalid, RequestRows
    from shared.specs import DatasetSpec

    spec = DatasetSpec.model_validate(
        {
            "name": "events",
            "target": "y",
            "task": "regression",
            "schema": {
                "columns": {
                    "at": {"dtype": "datetime64[ns]"},
                    "x": {"dtype": "float64"},
                    "n": {"dtype": "int64", "nullable": True},
                    "y": {"dtype": "float64"},
                }
            },
        }
    )
    contract = RequestRows(spec)
    [row] = contract.parse(b'{"at": "2026-12-01T10:00:00Z", "x": 2}')
    assert row.model_dump()["x"] == 2.0
    # An integer column without bounds still holds only what int64 holds: 10**30 would
    # turn the frame's column to Python objects under the model.
    too_big = b'{"at": "2026-12-01", "x": 1, "n": ' + str(10**30).encode() + b"}"
    assert contract.parse(b'{"at": "2026-12-01", "x": 1, "n": ' + str(2**63 - 1).encode() + b"}")
    for bad in (b'{"at": "2026-12-01", "x": NaN}', b'{"at": "2026-12-01", "x": "2"}', too_big):
        with pytest.raises(RequestInvalid) as refused:
            contract.parse(bad)
        assert refused.value.errors[0]["loc"][0] == "body"


def test_openapi_documents_the_spec_columns(world: dict[str, Any]) -> None:
    with client_for(world) as c:
        doc = c.get("/openapi.json").json()
    schema = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    row = schema["schema"]["oneOf"][0]
    assert set(row["properties"]) == set(ROW)
    assert "churned" not in row["properties"]
    assert row["properties"]["age"]["minimum"] == 18.0


def test_an_artifact_changed_after_approval_is_never_served(world: dict[str, Any]) -> None:
    world["store"].put_bytes(world["ref"], b"not the approved bytes")
    with client_for(world) as c:
        health = c.get("/health")
        predicted = c.post("/predict", json=ROW)
    assert health.status_code == 503
    assert health.json()["error"]["reason"] == "artifact_hash_mismatch"
    assert predicted.status_code == 503


def test_captured_rows_are_written_in_batches(world: dict[str, Any]) -> None:
    capture = InferenceCapture(world["store"], CAPTURE, "customers", batch_rows=3)
    with client_for(world, capture) as c:
        for age in (30, 40):
            assert c.post("/predict", json={**ROW, "age": age}).status_code == 200
        assert read_captures(world["store"], CAPTURE, "customers") == []  # 2 < 3 rows
        assert c.post("/predict", json={**ROW, "age": 50}).status_code == 200
    rows = read_captures(world["store"], CAPTURE, "customers")
    assert [r["inputs"]["age"] for r in rows] == [30, 40, 50]
    assert {r["model_version"] for r in rows} == {"1"}
    assert all(r["prediction"] in ("0", "1") for r in rows)
    [key] = [k for c_, k in world["store"].objects if c_ == CAPTURE]
    assert key.startswith("datasets/customers/20")
    assert key.endswith(".jsonl")


class BrokenStore(MemoryStore):
    def put_bytes(
        self,
        ref: ObjectRef,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        *,
        content_type: str | None = None,
        content_disposition: str | None = None,
    ) -> None:
        if ref.container == CAPTURE:
            raise ConnectionError("capture bucket unreachable")
        super().put_bytes(
            ref,
            data,
            metadata,
            content_type=content_type,
            content_disposition=content_disposition,
        )


def test_a_capture_failure_never_fails_a_prediction(world: dict[str, Any]) -> None:
    broken = BrokenStore()
    broken.objects = world["store"].objects
    capture = InferenceCapture(broken, CAPTURE, "customers", batch_rows=1, max_buffer_rows=2)
    with client_for(world, capture) as c:
        answers = [c.post("/predict", json={**ROW, "age": 20 + i}) for i in range(4)]
        assert all(a.status_code == 200 for a in answers)
        stats = c.get("/health").json()["capture"]
    assert stats["failed_writes"] == 4
    assert stats["buffered_rows"] == 2  # bounded: the oldest were dropped and counted
    assert stats["dropped_rows"] == 2
    assert stats["captured_rows"] == 0


def test_a_capture_failure_is_a_metric_cloudwatch_extracts(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # value("aws.cloudwatch.emf_lambda_stdout"): the document must be the whole log line
    # on standard output, not wrapped in a logging record.
    assert value("aws.cloudwatch.emf_lambda_stdout") == "stdout"
    broken = BrokenStore()
    capture = InferenceCapture(broken, CAPTURE, "customers", batch_rows=1)
    capture.record([{"age": 1}], ["0"], "1", "r1")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    (doc,) = [d for d in lines if "_aws" in d]
    assert doc["CaptureFailures"] == 1
    assert doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] == "CaptureFailures"


def test_sampling_keeps_about_the_asked_share(world: dict[str, Any]) -> None:
    import random

    capture = InferenceCapture(
        world["store"],
        CAPTURE,
        "customers",
        sampling=0.25,
        batch_rows=10_000,
        rng=random.Random(7),  # noqa: S311
    )
    for i in range(400):
        capture.record([{"i": i}], ["0"], "1", f"r{i}")
    kept = capture.flush()
    assert 70 <= kept <= 130
    assert capture.stats.sampled_out_rows == 400 - kept
    rows = read_captures(world["store"], CAPTURE, "customers")
    assert len(rows) == kept
    assert rows[0]["model_version"] == "1"
    assert json.dumps(rows[0]["inputs"]).startswith('{"i": ')


@pytest.fixture
def lambda_loop() -> Iterator[None]:
    """The current event loop mangum asks for, as Lambda's Python runtime has one (Python
    3.12 warns, an error here, when none was set)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


def _lambda_context() -> Any:
    class Context:  # what mangum reads of Lambda's context: nothing but itself
        function_name = "dhow-t-serve-customers"
        function_version = "8"
        aws_request_id = "req-1"

    return Context()


@pytest.mark.usefixtures("lambda_loop")
def test_the_api_gateway_request_reaches_the_predict_route(world: dict[str, Any]) -> None:
    """API Gateway's HTTP API event (payload 2.0, $default stage), through mangum as the
    Lambda handler runs it: the route the client called is the app's /predict."""
    from mangum import Mangum

    shape = value("aws.apigateway.lambda_payload_format")
    event = load_event("apigw_http_v2_predict.json")
    assert event["version"] == shape["payload_format_version"]
    assert event["requestContext"]["stage"] == shape["stage"]
    app = model_app(load_spec("customers"), world["store"], world["registry"], None, None)
    answer = Mangum(app, lifespan="off")(event, _lambda_context())
    assert answer["statusCode"] == 200, answer["body"]
    assert json.loads(answer["body"])["model_version"] == "1"


@pytest.mark.usefixtures("lambda_loop")
def test_a_failing_model_answers_500_without_a_function_error_and_is_counted(
    world: dict[str, Any], artifact: Path
) -> None:
    """Lambda's Errors metric would never see this model fail: the handler returns a 500
    response. The app's own per-request metrics (what the canary's alarms count) do."""
    from mangum import Mangum

    errors_metric = value("aws.lambda.errors_metric")
    assert errors_metric["counts_returned_5xx"] is False
    bad = broken_model(artifact.read_bytes())
    ref = ObjectRef(container=MODELS, key="models/customers/job-2/output/model.tar.gz")
    world["store"].put_bytes(ref, bad)
    v = world["registry"].register(
        "customers",
        artifact=f"s3://{ref.uri}",
        image="local:shared.trainer",
        metrics={"roc_auc": 0.7},
        lineage={ARTIFACT_SHA256: hashlib.sha256(bad).hexdigest()},
        status="Approved",
    )
    seen: list[tuple[int, float]] = []
    app = create_app(
        load_spec("customers"),
        ModelSlot(
            lambda: load_model_version(world["store"], world["registry"], "customers", v.version)
        ),
        None,
        lambda status, ms: seen.append((status, ms)),
    )
    handler = Mangum(app, lifespan="off")
    event = load_event("apigw_http_v2_predict.json")
    answers = [handler(event, _lambda_context()) for _ in range(3)]  # no exception escapes
    assert [a["statusCode"] for a in answers] == [500] * 3
    health = {**event, "rawPath": "/health"}
    health["requestContext"] = {
        **event["requestContext"],
        "http": {**event["requestContext"]["http"], "method": "GET", "path": "/health"},
    }
    assert handler(health, _lambda_context())["statusCode"] == 200
    # Every prediction is counted, with its status; the health probe is not judged.
    assert [s for s, _ in seen] == [500, 500, 500]
    assert all(ms >= 0 for _, ms in seen)


def test_an_unservable_model_is_a_counted_503(world: dict[str, Any]) -> None:
    world["store"].put_bytes(world["ref"], b"not the approved bytes")
    seen: list[int] = []
    app = create_app(
        load_spec("customers"),
        ModelSlot(lambda: load_model_version(world["store"], world["registry"], "customers", None)),
        None,
        lambda status, _ms: seen.append(status),
    )
    with TestClient(app) as c:
        assert c.post("/predict", json=ROW).status_code == 503
    assert seen == [503]


def _slow_slot(world: dict[str, Any], load_s: float, loads: list[int]) -> ModelSlot:
    """The champion, loaded by a loader that takes ``load_s`` longer (a cold start's
    download), counting its loads."""
    import time

    def load() -> Any:
        loads.append(1)
        time.sleep(load_s)
        return load_model_version(world["store"], world["registry"], "customers", None)

    return ModelSlot(load)


@pytest.mark.usefixtures("lambda_loop")
def test_the_cold_start_s_model_load_is_not_the_candidate_s_p99(world: dict[str, Any]) -> None:
    """At the min_requests floor the nearest-rank p99 is the slowest request: a cold
    start's load counted there would roll a healthy model back. The Lambda function loads
    on its first request (its init phase is limited, fact aws.lambda.init_phase_limit_s),
    and the judged latency of that request leaves the load out."""
    from mangum import Mangum

    from shared.canary import CanaryRule, PeriodCounts

    assert value("aws.lambda.init_phase_limit_s") == 10
    load_s, loads = 0.6, list[int]()
    seen: list[tuple[int, float]] = []
    app = create_app(
        load_spec("customers"),
        _slow_slot(world, load_s, loads),
        None,
        lambda status, ms: seen.append((status, ms)),
    )
    handler = Mangum(app, lifespan="off")
    event = load_event("apigw_http_v2_predict.json")
    rule = CanaryRule(min_requests=20, max_error_rate=0.05, max_p99_ms=load_s * 1000 / 2)
    answers = [handler(event, _lambda_context()) for _ in range(rule.min_requests)]
    assert [a["statusCode"] for a in answers] == [200] * rule.min_requests
    assert loads == [1]  # one load, on the first request
    period = PeriodCounts()
    for status, ms in seen:
        period.add(status, ms)
    assert period.requests == rule.min_requests
    assert seen[0][1] < load_s * 1000 / 2  # the first answer, without its load
    assert rule.verdict(period) is None  # a healthy model is not rolled back


def test_building_the_lambda_app_loads_no_model_at_init(world: dict[str, Any]) -> None:
    """Building the app (what the handler module does at init) reads nothing: a model's
    download and load could outlast the init phase (fact aws.lambda.init_phase_limit_s)."""
    loads: list[int] = []
    app = create_app(load_spec("customers"), _slow_slot(world, 0.0, loads), None)
    assert loads == []
    with TestClient(app) as c:
        assert c.post("/predict", json=ROW).status_code == 200
    assert loads == [1]


def test_the_online_deployment_loads_the_model_at_init_not_on_a_request(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Azure Monitor times each request of the endpoint itself: the scoring script's
    init() loads the model, so no request carries the load."""
    from shared.jobs import score_online

    loads: list[int] = []
    app = create_app(load_spec("customers"), _slow_slot(world, 0.0, loads), None)
    scorer = score_online.EndpointScorer(app, None)
    monkeypatch.setattr(score_online.EndpointScorer, "build", lambda *_a, **_k: scorer)
    monkeypatch.setattr("atexit.register", lambda _f: None)
    monkeypatch.setattr(score_online, "_SCORER", None)
    score_online.init()
    assert loads == [1]  # loaded by init, before any request
    assert score_online._SCORER is scorer
    assert scorer.score(json.dumps(ROW)).status == 200
    assert loads == [1]


def _customers(out_of_domain: str) -> Any:
    from shared.specs import DatasetSpec

    doc = load_spec("customers").model_dump(by_alias=True, mode="json")
    doc["serving"]["out_of_domain"] = out_of_domain
    return DatasetSpec.model_validate(doc)


OUTSIDE = [ROW, {**ROW, "age": 7}, {**ROW, "age": 120, "segment": "platinum"}]


def test_under_reject_a_row_outside_the_domain_is_refused_and_nothing_is_flagged(
    world: dict[str, Any],
) -> None:
    assert load_spec("customers").serving.out_of_domain == "reject"  # the default
    capture = InferenceCapture(world["store"], CAPTURE, "customers", batch_rows=10**6)
    app = model_app(_customers("reject"), world["store"], world["registry"], None, capture)
    with TestClient(app) as c:
        refused = c.post("/predict", json=OUTSIDE)
        one = c.post("/predict", json=ROW)
        health = c.get("/health").json()
    assert refused.status_code == 422
    assert {(tuple(e["loc"]), e["type"]) for e in refused.json()["detail"]} == {
        (("body", 1, "age"), "greater_than_equal"),
        (("body", 2, "age"), "less_than_equal"),
        (("body", 2, "segment"), "literal_error"),
    }
    assert one.status_code == 200
    assert "out_of_domain" not in one.json()  # the answer is what it always was
    assert (health["out_of_domain"], health["out_of_domain_rows"]) == ("reject", 0)
    [captured] = read_captures(world["store"], CAPTURE, "customers")
    assert "out_of_domain" not in captured


def test_under_accept_a_row_outside_the_domain_is_served_flagged_counted_and_captured(
    world: dict[str, Any],
) -> None:
    capture = InferenceCapture(world["store"], CAPTURE, "customers", batch_rows=10**6)
    app = model_app(_customers("accept"), world["store"], world["registry"], None, capture)
    with TestClient(app) as c:
        served = c.post("/predict", json=OUTSIDE)
        alone = c.post("/predict", json={**ROW, "emirate": "muscat"})
        health = c.get("/health").json()
        doc = c.get("/openapi.json").json()
    assert served.status_code == 200, served.text
    assert len(served.json()["predictions"]) == 3
    flags = [
        [],
        [{"column": "age", "check": "greater_than_or_equal_to"}],
        [
            {"column": "age", "check": "less_than_or_equal_to"},
            {"column": "segment", "check": "isin"},
        ],
    ]
    assert served.json()["out_of_domain"] == flags
    assert alone.status_code == 200
    assert alone.json()["out_of_domain"] == [[{"column": "emirate", "check": "isin"}]]
    assert health["out_of_domain"] == "accept"
    assert health["out_of_domain_rows"] == 3
    assert health["out_of_domain_by_column"] == {"age": 2, "emirate": 1, "segment": 1}
    captured = read_captures(world["store"], CAPTURE, "customers")
    assert [r["out_of_domain"] for r in captured] == [*flags, alone.json()["out_of_domain"][0]]
    assert [r["inputs"]["age"] for r in captured] == [41, 7, 120, 41]
    # The contract says what is expected, and no longer refuses it.
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    age = body["schema"]["oneOf"][0]["properties"]["age"]
    assert age["minimum"] == -(2**63)  # what int64 holds, no longer the spec's 18
    assert "greater_than_or_equal_to 18.0" in age["description"]
