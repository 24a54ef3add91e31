"""Serving on the live local platform: an approved model is deployed by itself, serves
predictions through the local router and captures them; a broken model under canary
is rolled back by itself, failing no more than the canary's share of requests."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2 as httpx
from dhow_local.platform import ROUTER_URL

from shared.artifacts import ARTIFACT_SHA256
from shared.capture import read_captures
from shared.events import (
    DeploymentCompleted,
    DeploymentRolledBack,
    DeploymentStarted,
    ModelApproved,
    ObjectRef,
)
from shared.wiring import build_model_registry
from tests.helpers import broken_model
from tests.integration.test_aws_ingest_flow import (
    customers_csv,
    env,  # noqa: F401 - the module's fixture, shared
    put,
    wait_event,
)
from tests.unit.test_serving import ROW

ROOT = Path(__file__).resolve().parents[2]
PREDICT = f"{ROUTER_URL}/datasets/customers/predict"


def _serving_status(client: httpx.Client) -> dict[str, Any]:
    status: dict[str, Any] = client.get(f"{ROUTER_URL}/_router/status").json()
    return status.get("customers", {})


def test_an_approved_model_is_deployed_serves_and_captures(env: dict[str, Any]) -> None:  # noqa: F811
    upload_id = put(env, "datasets/customers/serve.csv", customers_csv(uuid.uuid4().hex[:6]))
    approved = wait_event(env["tap"], upload_id, ModelApproved, timeout=180)
    started = wait_event(env["tap"], upload_id, DeploymentStarted, timeout=60)
    done = wait_event(env["tap"], upload_id, DeploymentCompleted, timeout=90)
    assert isinstance(approved, ModelApproved)
    assert isinstance(started, DeploymentStarted)
    assert isinstance(done, DeploymentCompleted)
    assert done.traffic == {approved.model_version: 1.0}
    cli = subprocess.run(
        [sys.executable, "-m", "dhow_cli", "predict", "customers",
         str(ROOT / "localstack/samples/customers.csv"), "--limit", "60", "--batch-rows", "20",
         "--json"],
        capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ), cwd=ROOT,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    out = json.loads(cli.stdout)
    assert out["rows"] == 60
    assert out["served_by"] == {approved.model_version: 60}
    assert set(out["predictions"]) <= {"0", "1"}
    container = env["topo"].bucket("capture").name
    deadline = time.monotonic() + 30  # batches of 50, or 10 s for what is left
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = [
            r
            for r in read_captures(env["ports"].store, container, "customers")
            if r["model_version"] == approved.model_version
        ]
        if len(rows) >= 60:
            break
        time.sleep(1)
    assert len(rows) >= 60
    assert {"age", "segment", "emirate"} <= set(rows[-1]["inputs"])


def test_a_broken_canary_is_rolled_back_by_itself(env: dict[str, Any]) -> None:  # noqa: F811
    import hashlib

    settings = env["settings"]
    registry = build_model_registry(settings)
    with httpx.Client(timeout=30) as client:
        deadline = time.monotonic() + 90
        while _serving_status(client).get("status") == "InProgress":  # let any rollout finish
            assert time.monotonic() < deadline
            time.sleep(0.5)
        serving = int(_serving_status(client)["stable"])
        good = registry.version("customers", serving)
        assert good is not None
        good_bytes = b"".join(env["ports"].store.iter_chunks(ObjectRef.from_uri(good.artifact)))
        broken = broken_model(good_bytes)
        ref = ObjectRef(
            container=env["topo"].bucket("models").name,
            key=f"models/customers/broken-{uuid.uuid4().hex[:6]}/output/model.tar.gz",
        )
        env["ports"].store.put_bytes(ref, broken)
        version = registry.register(
            "customers",
            artifact=f"s3://{ref.uri}",
            image=good.image,
            metrics=good.metrics,
            lineage={**good.lineage, ARTIFACT_SHA256: hashlib.sha256(broken).hexdigest()},
            status="Approved",
            reason="deliberately broken, for the rollback test",
        )
        correlation = f"itest-broken-{uuid.uuid4().hex[:6]}"
        env["ports"].bus.publish(
            ModelApproved(
                dataset="customers",
                correlation_id=correlation,
                model_version=str(version.version),
                job_name="itest-broken",
                metrics=good.metrics,
            )
        )
        started = wait_event(env["tap"], correlation, DeploymentStarted, timeout=60)
        assert isinstance(started, DeploymentStarted)
        assert (started.strategy, started.previous_version) == ("canary", str(serving))
        while _serving_status(client).get("candidate") != version.version:
            time.sleep(0.2)  # the router reads the rollout on its next tick
        # The alarms judge the candidate's own requests: at its 10% share, min_requests
        # (20) of them take 200 requests, inside the canary's one (local) minute.
        sent, failed = 0, []
        while sent < 600 and _serving_status(client).get("status") == "InProgress":
            for _ in range(20):
                r = client.post(PREDICT, json=ROW)
                sent += 1
                if r.status_code != 200:
                    failed.append(r)
        rolled = wait_event(env["tap"], correlation, DeploymentRolledBack, timeout=30)
        assert isinstance(rolled, DeploymentRolledBack)
        assert (rolled.model_version, rolled.restored_version) == (
            str(version.version),
            str(serving),
        )
        assert "requests failed" in rolled.reason
        assert failed, "the broken canary never received a request"
        # No failed request beyond the canary's 10% share, and every failure was the canary's.
        assert len(failed) <= math.ceil(0.1 * sent)
        assert {r.headers["x-dhow-routed-version"] for r in failed} == {str(version.version)}
        after = [client.post(PREDICT, json=ROW) for _ in range(20)]
        assert [a.status_code for a in after] == [200] * 20
        assert {a.json()["model_version"] for a in after} == {str(serving)}
        champion = registry.champion("customers")
        assert champion is not None
        assert champion.version == serving
    print(f"\nbroken canary: {len(failed)} of {sent} requests failed before the rollback")
