"""The online deployment's scoring script on a real trained model: init/run as Azure ML's
inference server calls them, answering what the serve app answers (the same app, the
same statuses, the same capture), for the version the deployment names."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.adapters.lineage_registry import LineageModelRegistry
from shared.artifacts import ARTIFACT_SHA256
from shared.capture import read_captures
from shared.cloud_facts import value
from shared.events import ObjectRef
from shared.jobs import score_online
from shared.jobs.score_online import EndpointScorer
from shared.serve_app import MODEL_VERSION_HEADER
from shared.settings import Settings
from shared.specs import load_spec
from shared.topology import build_topology
from shared.validation import validate_file
from shared.wiring import Ports, build_serve_app
from tests.helpers import (
    ROOT,
    MemoryBus,
    MemoryLineage,
    MemoryStore,
    broken_model,
    train_artifact,
)

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
TOPO = build_topology("tst")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("score-artifact")
    run = validate_file(
        ROOT / "localstack/samples/customers.csv", "csv", load_spec("customers"), out_dir=base
    )
    assert run.curated is not None
    return train_artifact(base / "m", run.curated, n_estimators=30, max_depth=2)


@pytest.fixture
def ports(artifact: Path) -> Ports:
    """v1 a healthy model, v2 one whose every prediction fails; both approved."""
    store, lineage = MemoryStore(), MemoryLineage()
    registry = LineageModelRegistry(lineage)
    models = TOPO.bucket("models").name
    for key, body in (
        ("models/customers/v1/model.tar.gz", artifact.read_bytes()),
        ("models/customers/v2/model.tar.gz", broken_model(artifact.read_bytes())),
    ):
        ref = ObjectRef(container=models, key=key)
        store.put_bytes(ref, body)
        registry.register(
            "customers",
            artifact=ref.uri,
            image="local:shared.trainer",
            metrics={"roc_auc": 0.7},
            lineage={ARTIFACT_SHA256: hashlib.sha256(body).hexdigest(), "sha256": "ab" * 32},
            status="Approved",
        )
    return Ports(store=store, bus=MemoryBus(), lineage=lineage)


def settings(version: int) -> Settings:
    return Settings(
        cloud="azure", stage="tst", serve_dataset="customers", serve_model_version=version
    )


def test_a_row_is_answered_as_the_serve_app_answers_it(ports: Ports) -> None:
    scorer = EndpointScorer.build(settings(1), ports)
    scored = scorer.score(json.dumps(ROW), {"x-request-id": "req-1"})
    with TestClient(build_serve_app(settings(1), ports)) as serve:
        served = serve.post("/predict", json=ROW)
    assert scored.status == served.status_code == 200
    assert json.loads(scored.body) == served.json()
    assert scored.headers[MODEL_VERSION_HEADER] == "1"
    answer = json.loads(scored.body)
    assert answer["predictions"][0] in answer["labels"]


def test_a_batch_is_predicted_by_the_deployments_own_version(ports: Ports) -> None:
    scorer = EndpointScorer.build(settings(1), ports)
    scored = scorer.score(json.dumps([ROW, {**ROW, "customer_id": "C-2", "age": 30}]))
    answer = json.loads(scored.body)
    assert scored.status == 200
    assert answer["model_version"] == "1"
    assert len(answer["predictions"]) == 2


def test_a_wrong_column_is_the_same_422_naming_it(ports: Ports) -> None:
    scorer = EndpointScorer.build(settings(1), ports)
    scored = scorer.score(json.dumps({**ROW, "agee": 3}))
    assert scored.status == 422
    assert "agee" in scored.body.decode()


def test_a_failing_model_answers_500_so_the_endpoint_counts_a_5xx(ports: Ports) -> None:
    # The canary's evidence on Azure is the deployment's 5xx a minute (Azure Monitor's
    # statusCodeClass): the failing candidate must answer 500, not a 200 with an error.
    classes = value("azure.serving.endpoint_metrics")["dimensions"]
    assert "statusCodeClass" in classes
    scored = EndpointScorer.build(settings(2), ports).score(json.dumps(ROW))
    assert scored.status == 500
    assert json.loads(scored.body)["error"]["reason"] == "prediction_failed"


def test_a_version_the_registry_lacks_is_503_not_a_crash(ports: Ports) -> None:
    scored = EndpointScorer.build(settings(9), ports).score(json.dumps(ROW))
    assert scored.status == 503
    assert json.loads(scored.body)["error"]["reason"] == "model_not_servable"


def test_answered_rows_are_captured_where_the_drift_check_reads(ports: Ports) -> None:
    scorer = EndpointScorer.build(settings(1), ports)
    scorer.score(json.dumps(ROW), {"x-request-id": "req-7"})
    scorer.flush()
    rows = read_captures(ports.store, TOPO.bucket("capture").name, "customers")
    assert [(r["request_id"], r["model_version"]) for r in rows] == [("req-7", "1")]


def test_init_and_run_as_the_inference_server_calls_them(
    ports: Ports, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = value("azure.serving.scoring_script_contract")
    # Installed by `make venv` (no-deps: see the Makefile), so this never skips.
    server = importlib.import_module(contract["response_module"])
    # init() builds from the environment; the ports are the test's in-memory ones.
    real = EndpointScorer.build
    monkeypatch.setattr(EndpointScorer, "build", lambda s, p=None: real(s, ports))
    monkeypatch.setenv("DHOW_CLOUD", "azure")
    monkeypatch.setenv("DHOW_STAGE", "tst")
    monkeypatch.setenv("DHOW_SERVE_DATASET", "customers")
    monkeypatch.setenv("DHOW_SERVE_MODEL_VERSION", "1")
    score_online.init()
    ok: Any = score_online.run(json.dumps(ROW), {"x-request-id": "r"})
    bad: Any = score_online.run(json.dumps({"age": "old"}))
    assert isinstance(ok, server.AMLResponse)
    assert ok.status_code == 200
    assert ok.headers["Content-Type"] == "application/json"
    assert bad.status_code == 422


def test_the_script_loads_as_the_inference_server_loads_it() -> None:
    # azureml-inference-server-http executes the file by path as "entry_module", never
    # registered in sys.modules, and needs init() and a run() it can pass the body to.
    import importlib.util
    import inspect

    contract = value("azure.serving.scoring_script_contract")
    spec = importlib.util.spec_from_file_location(
        "entry_module", ROOT / "shared/jobs/score_online.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = getattr(module, contract["run"])
    assert callable(getattr(module, contract["init"]))
    params = list(inspect.signature(run).parameters)
    assert params[0] != "request_headers"
    assert "request_headers" in params


def test_a_body_over_the_cap_is_a_413_before_the_app_reads_it(
    ports: Ports, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Azure ML's inference server hands run() any body whole; the script refuses one over
    the serve app's cap (what Lambda could carry at most, fact
    aws.lambda.sync_invoke_payload) with the app's own 413, and never passes it on."""
    from shared.serving import MAX_BODY_BYTES

    # Nothing in front of the deployment caps a body: the script must.
    assert value("azure.serving.online_endpoint_limits")["request_size_limit"] is None
    assert value("aws.lambda.sync_invoke_payload")["max_mb"] * 1_000_000 >= MAX_BODY_BYTES
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        raise AssertionError("the app was handed a body over the cap")

    scorer = EndpointScorer(app, None)  # type: ignore[arg-type]
    big = json.dumps([{**ROW, "customer_id": "C" * 900}] * (MAX_BODY_BYTES // 900 + 1))
    scored = scorer.score(big)
    assert scored.status == 413
    assert json.loads(scored.body)["error"]["reason"] == "body_too_large"
    assert seen == []
    # And through run(), as the inference server calls it: the status is kept.
    contract = value("azure.serving.scoring_script_contract")
    server = importlib.import_module(contract["response_module"])
    monkeypatch.setattr(score_online, "_SCORER", scorer)
    answer: Any = score_online.run(big)
    assert isinstance(answer, server.AMLResponse)
    assert answer.status_code == 413
    assert seen == []
