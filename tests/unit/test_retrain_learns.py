"""Retraining that learns from new data (issue 19, part 3).

What a run learns from is the spec's ``training.learn_from``, resolved from lineage; a
drift policy's retrain with nothing newer than the champion's data is skipped and says
so (lineage, alert); the jobs on both clouds get one input per version, as each cloud's
own model of the request allows.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from azure.ai.ml.constants._component import IOConstants
from azure.ai.ml.entities import Component
from azure.ai.ml.entities._job.to_rest_functions import to_rest_job_object
from moto import mock_aws
from pydantic import ValidationError

from shared.adapters.azure_ml import AzureMLTrainingConfig, AzureMLTrainingLauncher
from shared.cloud_facts import value
from shared.events import DatasetValidated, DriftDetected, ObjectRef, TrainingLaunched
from shared.ports import LaunchedTraining, LineageRecord, TrainingJobRequest, TrainingLauncher
from shared.services.train_launch import (
    NO_NEW_DATA,
    TrainingData,
    TrainLaunchService,
    data_fingerprint,
    data_versions,
    training_data,
    training_request,
)
from shared.specs import LearnFrom, SpecCatalog, TrainingSettings, load_spec
from shared.validation import validate_file
from tests.helpers import ROOT, MemoryBus, MemoryLineage
from tests.unit.test_drift_service import (  # noqa: F401
    CHAMPION_DATA,
    CURATED,
    SHIFTED,
    T0,
    World,
    reference,
)

# The version validate announced: the shipped spec's.
SPEC_VERSION = load_spec("customers").spec_version
DAYS = ["2026-11-01", "2026-11-05", "2026-11-09", "2026-11-13"]
SHAS = [c * 64 for c in "abcd"]  # one curated version a day, oldest first


def _curated(sha: str) -> str:
    return f"s3://dhow-t-curated/datasets/customers/sha256={sha}/data.parquet"


def validated(
    lineage: MemoryLineage,
    sha: str,
    day: str,
    record: str | None = None,
    spec_version: str = SPEC_VERSION,
) -> None:
    at = datetime.fromisoformat(f"{day}T10:00:00+00:00")
    lineage.put_if_absent(
        LineageRecord(
            dataset="customers",
            record_id=record or f"validate:{sha}",
            kind="validate",
            status="validated",
            attributes={
                "sha256": sha,
                "spec_version": spec_version,
                "curated": _curated(sha),
                "rows": 400,
            },
            created_at=at,
            updated_at=at,
        )
    )


def event(sha: str, correlation: str = "u-1", spec_version: str = SPEC_VERSION) -> DatasetValidated:
    return DatasetValidated(
        dataset="customers",
        correlation_id=correlation,
        sha256=sha,
        rows=400,
        spec_version=spec_version,
        curated=ObjectRef.from_uri(_curated(sha)),
    )


@pytest.fixture
def lineage() -> MemoryLineage:
    store = MemoryLineage()
    for sha, day in zip(SHAS, DAYS, strict=True):
        validated(store, sha, day)
    return store


# --- the spec ---------------------------------------------------------------------------


def test_learn_from_is_one_of_latest_last_since_and_defaults_to_latest() -> None:
    assert TrainingSettings().learn_from.latest is True
    assert TrainingSettings.model_validate({"learn_from": {}}).learn_from.latest is True
    assert LearnFrom.model_validate({"last": 3}).last == 3
    assert str(LearnFrom.model_validate({"since": "2026-11-05"}).since) == "2026-11-05"
    for bad in ({"last": 2, "since": "2026-11-01"}, {"last": 0}, {"latest": False},
                {"since": "last tuesday"}, {"everything": True}):  # fmt: skip
        with pytest.raises(ValidationError):
            LearnFrom.model_validate(bad)


# --- what a run learns from -------------------------------------------------------------


def test_latest_is_the_announced_version_alone(lineage: MemoryLineage) -> None:
    data = training_data(lineage, LearnFrom(), event(SHAS[2]))
    assert data.sha256s == (SHAS[2],)


def test_last_n_is_the_newest_n_up_to_the_announced_one(lineage: MemoryLineage) -> None:
    assert training_data(lineage, LearnFrom(last=3), event(SHAS[3])).sha256s == tuple(SHAS[1:])
    # A redelivery of c's event after d was validated resolves what it did then: a, b, c.
    assert training_data(lineage, LearnFrom(last=3), event(SHAS[2])).sha256s == tuple(SHAS[:3])
    assert training_data(lineage, LearnFrom(last=9), event(SHAS[3])).sha256s == tuple(SHAS)
    assert training_data(lineage, LearnFrom(last=1), event(SHAS[3])).sha256s == (SHAS[3],)


def test_since_is_every_version_validated_on_or_after_the_day(lineage: MemoryLineage) -> None:
    since = LearnFrom.model_validate({"since": DAYS[1]})
    assert training_data(lineage, since, event(SHAS[3])).sha256s == tuple(SHAS[1:])


def test_a_version_validated_twice_is_learnt_from_once(lineage: MemoryLineage) -> None:
    validated(lineage, SHAS[1], DAYS[2], record=f"validate:{SHAS[1]}:attempt-2")
    got = training_data(lineage, LearnFrom(last=9), event(SHAS[3])).sha256s
    assert sorted(got) == sorted(SHAS)
    assert len(got) == 4


def test_the_fingerprint_is_the_set_not_its_order() -> None:
    assert data_fingerprint(SHAS) == data_fingerprint(reversed(SHAS))
    assert data_fingerprint(SHAS) != data_fingerprint(SHAS[1:])


# --- train-launch -----------------------------------------------------------------------


class Recording(TrainingLauncher):
    def __init__(self) -> None:
        self.requests: list[TrainingJobRequest] = []

    def launch(self, request: TrainingJobRequest) -> LaunchedTraining:
        self.requests.append(request)
        return LaunchedTraining(
            job_name=f"job-{len(self.requests)}", instance_type="gpu", created=True
        )


def _specs(tmp_path: Path, learn_from: dict[str, Any]) -> SpecCatalog:
    """The shipped spec with its learn_from changed: the version the new uploads are
    validated under (``_edited``)."""
    spec = yaml.safe_load((ROOT / "shared/specs/customers.yaml").read_text())
    spec["training"]["learn_from"] = learn_from
    (tmp_path / "customers.yaml").write_text(yaml.safe_dump(spec))
    return SpecCatalog(tmp_path)


def _edited(specs: SpecCatalog) -> str:
    return specs.current("customers").spec_version


def test_a_launch_learns_from_the_spec_s_versions_and_records_them(
    tmp_path: Path, lineage: MemoryLineage
) -> None:
    launcher, bus = Recording(), MemoryBus()
    specs = _specs(tmp_path, {"last": 2})
    svc = TrainLaunchService(launcher, bus, lineage, backend="sagemaker", specs=specs)
    assert svc.handle(event(SHAS[3], spec_version=_edited(specs))).status == "launched"
    [req] = launcher.requests
    assert req.inputs == tuple(ObjectRef.from_uri(_curated(s)) for s in SHAS[2:])
    assert req.data_sha256s == (SHAS[2], SHAS[3])
    assert req.hyperparameters["dhow_data_fingerprint"] == data_fingerprint(SHAS[2:])
    assert req.hyperparameters["dedupe_on"] == "customer_id"  # the spec's unique column
    [row] = [r for r in lineage.list("customers") if r.kind == "train"]
    assert row.attributes["data_sha256s"] == [SHAS[2], SHAS[3]]
    assert row.attributes["data_fingerprint"] == data_fingerprint(SHAS[2:])
    assert isinstance(bus.events[-1], TrainingLaunched)


def _champion(lineage: MemoryLineage, sha256s: list[str], version: int = 1) -> None:
    """The register row of an approved version, as register completes it."""
    lineage.put_if_absent(
        LineageRecord(
            dataset="customers",
            record_id=f"register:job-v{version}",
            kind="register",
            status="approved",
            attributes={
                "sha256": sha256s[-1],
                "data_fingerprint": data_fingerprint(sha256s),
                "model_version": version,
            },
        )
    )


def _drift(check: str = "c1") -> DriftDetected:
    return DriftDetected(
        dataset="customers", correlation_id=f"drift-customers-{check}", model_version="1",
        drifted_columns=["age"], drift_share=0.6, action="retrain", check_id=check,
    )  # fmt: skip


def test_a_drift_retrain_on_the_champion_s_own_data_is_skipped_and_recorded() -> None:
    launcher, bus, lineage = Recording(), MemoryBus(), MemoryLineage()
    validated(lineage, SHAS[0], DAYS[0])
    _champion(lineage, [SHAS[0]])
    out = TrainLaunchService(launcher, bus, lineage, backend="local").on_drift(_drift())
    assert (out.status, out.reason) == ("skipped", NO_NEW_DATA)
    assert launcher.requests == []
    assert bus.events == []
    [row] = [r for r in lineage.list("customers") if r.kind == "train_skipped"]
    assert (row.status, row.attributes["reason"]) == ("skipped", NO_NEW_DATA)
    assert row.attributes["data_sha256s"] == [SHAS[0]]


def test_a_drift_retrain_with_a_newer_upload_trains_on_it() -> None:
    launcher, bus, lineage = Recording(), MemoryBus(), MemoryLineage()
    validated(lineage, SHAS[0], DAYS[0])
    _champion(lineage, [SHAS[0]])
    validated(lineage, SHAS[1], DAYS[1])
    out = TrainLaunchService(launcher, bus, lineage, backend="local").on_drift(_drift())
    assert out.status == "launched"
    assert launcher.requests[0].data_sha256s == (SHAS[1],)


# --- the drift check says so ------------------------------------------------------------


@pytest.fixture
def drift_world(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    reference: Path,  # noqa: F811
) -> Iterator[World]:
    spec = yaml.safe_load((ROOT / "shared/specs/customers.yaml").read_text())
    spec["drift"] |= {"policy": "retrain", "cooldown_hours": 6, "min_rows": 200}
    (tmp_path / "customers.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        world = World(tmp_path, reference)
        # The champion (v2) records what it learnt from: the one validated version.
        world.registry.register(
            "customers",
            artifact="s3://dhow-t-models/m2.tar.gz",
            image="local:shared.trainer",
            metrics={"roc_auc": 0.7},
            lineage={
                "curated": f"s3://{CURATED}/{CHAMPION_DATA.curated_key}",
                "sha256": SHAS[0],
                "data_fingerprint": data_fingerprint([SHAS[0]]),
            },
            status="Approved",
        )
        validated(world.lineage, SHAS[0], DAYS[0])
        yield world


def test_drift_with_no_new_data_alerts_that_the_retrain_was_skipped(drift_world: World) -> None:
    w = drift_world
    champion = w.registry.champion("customers")
    assert champion is not None
    assert champion.version == 2
    w.capture(w.shifted, T0 - timedelta(hours=1))
    out = w.svc.check("customers")
    assert out.verdict.verdict == "drift"
    assert out.action == "alert"  # train-launch is not asked to retrain
    [detected] = w.events(DriftDetected)
    assert detected.action == "alert"
    [alert] = w.alerts()
    assert f"Policy: retrain; skipped: {NO_NEW_DATA}" in alert["Message"]
    assert "upload new data" in alert["Message"]
    row = w.lineage.get("customers", f"drift:{out.check_id}")
    assert row is not None
    assert row.attributes["skipped"] == {"action": "retrain", "reason": NO_NEW_DATA}
    # No cooldown was taken: a check after new data arrives may retrain at once.
    assert w.lineage.get("customers", "drift:policy") is None
    validated(w.lineage, SHAS[1], DAYS[1])
    w.now = T0 + timedelta(hours=1)
    w.capture(w.shifted, w.now - timedelta(minutes=30))
    again = w.svc.check("customers")
    assert again.action == "retrain"


# --- the jobs' requests -----------------------------------------------------------------


def _request(n: int) -> TrainingJobRequest:
    versions = tuple(event(sha) for sha in SHAS[:n])
    return training_request(versions[-1], data=TrainingData(versions))


AZ_CFG = AzureMLTrainingConfig(
    compute="azureml:dhow-prod-gpu",
    environment="azureml:dhow-train:1",
    curated_datastore="dhowprodcurated",
    models_datastore="dhowprodmodels",
    models_container="dhow-prod-models",
    name_prefix="dhow-prod",
    code=str(ROOT / "shared"),
)


def test_an_azure_ml_run_on_several_versions_has_an_input_each() -> None:
    """One uri_file input per version, each a --train of the command; the names pass
    azure-ai-ml's own check of input names (fact azure.ml.job_input_names)."""
    rule = value("azure.ml.job_input_names")
    assert rule["pattern"] == IOConstants.VALID_KEY_PATTERN
    job = AzureMLTrainingLauncher(None, AZ_CFG).request(_request(3))  # type: ignore[arg-type]
    body = to_rest_job_object(job).as_dict()["properties"]
    names = list(body["inputs"])
    assert names == ["train", "train_1", "train_2"]
    assert Component._validate_io_names(names).passed
    assert all(re.match(rule["pattern"], n) for n in names)
    assert [body["inputs"][n]["uri"] for n in names] == [
        f"azureml://datastores/dhowprodcurated/paths/datasets/customers/sha256={s}/data.parquet"
        for s in SHAS[:3]
    ]
    assert body["command"].count("--train ${{inputs.") == 3
    for n in names:
        assert f"--train ${{{{inputs.{n}}}}}" in body["command"]


def test_the_hyperparameters_tag_of_the_most_a_job_learns_from_fits_azure_s_limit() -> None:
    """The hyperparameters travel as one run tag: a fixed-size fingerprint, not the list."""
    limit = value("azure.ml.run_tag_limits")["value_chars"]
    many = tuple(event(f"{i:02x}" * 32) for i in range(200))
    one = training_request(many[-1])
    req = training_request(many[-1], data=TrainingData(many))
    job = AzureMLTrainingLauncher(None, AZ_CFG).request(req)  # type: ignore[arg-type]
    assert job.tags is not None
    assert len(job.tags["dhow:hyperparameters"]) <= limit
    assert len(req.hyperparameters) == len(one.hyperparameters)


def test_a_model_s_data_versions_fit_one_sagemaker_metadata_value() -> None:
    """The most a SageMaker job learns from (its channels but the code one), as register
    keeps them in the version's lineage (fact aws.sagemaker.model_package_metadata_limits)."""
    most = value("aws.sagemaker.training_input_channels")["max"] - 1
    kept = data_versions(f"{i:02x}" * 32 for i in range(most))
    low, high = value("aws.sagemaker.model_package_metadata_limits")["value_length"]
    assert low <= len(kept) <= high


def test_the_azure_ml_command_trains_on_every_input(tmp_path: Path) -> None:
    """The job's command as Azure ML runs it, its placeholders replaced by the mounted
    paths: the trainer learns from both uploads, each repeated row once."""
    run = validate_file(
        ROOT / "localstack/samples/customers.csv", "csv", load_spec("customers"), out_dir=tmp_path
    )
    assert run.curated is not None
    rows = pd.read_parquet(run.curated)
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    rows.iloc[:300].to_parquet(first, index=False)
    rows.iloc[100:].to_parquet(second, index=False)
    job = AzureMLTrainingLauncher(None, AZ_CFG).request(_request(2))  # type: ignore[arg-type]
    body = to_rest_job_object(job).as_dict()["properties"]
    out = tmp_path / "out"
    line = (
        str(job.command)
        .replace("${{inputs.train}}", shlex.quote(str(first)))
        .replace("${{inputs.train_1}}", shlex.quote(str(second)))
        .replace("${{outputs.output}}", shlex.quote(str(out)))
    )
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        **body["environmentVariables"],
    }
    done = subprocess.run(
        ["bash", "-c", line],  # noqa: S607 - the shell Azure ML runs the command in
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with tarfile.open(out / "model.tar.gz") as tar:
        f = tar.extractfile("model.json")
        assert f is not None
        card = json.loads(f.read())
        m = tar.extractfile("metrics.json")
        assert m is not None
        metrics = json.loads(m.read())
    assert (card["uploads"], card["repeated_rows_dropped"]) == (2, 200)
    assert metrics["n_train"] + metrics["n_holdout"] == len(rows)


def test_a_day_is_read_in_utc() -> None:
    lineage = MemoryLineage()
    late = datetime(2026, 11, 4, 23, 30, tzinfo=UTC)  # the 5th in Dubai, the 4th in UTC
    lineage.put_if_absent(
        LineageRecord(
            dataset="customers", record_id="validate:x", kind="validate", status="validated",
            attributes={
                "sha256": "e" * 64, "spec_version": SPEC_VERSION, "curated": _curated("e" * 64)
            },
            created_at=late, updated_at=late,
        )
    )  # fmt: skip
    validated(lineage, SHAS[3], DAYS[3])
    since = LearnFrom.model_validate({"since": "2026-11-05"})
    assert training_data(lineage, since, event(SHAS[3])).sha256s == (SHAS[3],)


def test_a_spec_writes_back_the_one_learn_from_key_it_sets() -> None:
    """dataset init writes the spec from its model: learn_from is the one key chosen, and
    reads back the same (not latest: true beside last: null and since: null)."""
    for chosen in ({"latest": True}, {"last": 3}, {"since": "2026-11-01"}):
        dumped = LearnFrom.model_validate(chosen).model_dump(mode="json")
        assert dumped == chosen
        assert LearnFrom.model_validate(dumped).model_dump(mode="json") == chosen
    written = yaml.safe_load(load_spec("customers").to_yaml())
    assert written["training"]["learn_from"] == {"latest": True}


def test_more_uploads_than_a_sagemaker_job_takes_are_answered_not_retried(
    tmp_path: Path,
) -> None:
    """learn_from asks for more versions than CreateTrainingJob has channels: the real
    launcher (on botocore's Stubber, which fails on any call not queued, so no
    CreateTrainingJob is sent) refuses it, and train-launch answers with a failed
    TrainingCompleted saying what to change (a retry would fail the same way)."""
    from botocore.stub import Stubber

    from shared.adapters.aws import aws_client
    from shared.adapters.sagemaker_training import SageMakerTrainingLauncher
    from shared.events import TrainingCompleted
    from shared.settings import Settings
    from tests.unit.test_training_job_request import CFG

    room = value("aws.sagemaker.training_input_channels")["max"] - 1
    lineage = MemoryLineage()
    shas = [f"{i:02x}" * 32 for i in range(room + 1)]
    for i, sha in enumerate(shas):
        validated(lineage, sha, f"2026-10-{i + 1:02d}")
    sm, sq = aws_client("sagemaker", Settings()), aws_client("service-quotas", Settings())
    bus = MemoryBus()
    specs = _specs(tmp_path, {"last": 99})
    svc = TrainLaunchService(
        SageMakerTrainingLauncher(sm, sq, CFG), bus, lineage, backend="sagemaker", specs=specs
    )
    with Stubber(sm) as sm_stub, Stubber(sq) as sq_stub:
        sm_stub.add_client_error("describe_training_job", "ValidationException", "not found")
        sq_stub.add_response("list_service_quotas", {"Quotas": []})
        out = svc.handle(event(shas[-1], spec_version=_edited(specs)))
        sm_stub.assert_no_pending_responses()
    assert (out.status, out.reason) == ("refused", "too_many_training_inputs")
    [failed] = bus.events
    assert isinstance(failed, TrainingCompleted)
    assert failed.status == "Failed"
    assert "learn_from" in (failed.reason or "")
    assert [r for r in lineage.list("customers") if r.kind == "train"] == []
