"""The local training backend's job, on moto's S3 and EventBridge: success and a crash
both end in SageMaker's own state-change event, which register parses."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dhow_local.training_job import run_job
from moto import mock_aws

from shared.adapters.aws import aws_client
from shared.events import ObjectRef
from shared.ports import TrainingJobRequest
from shared.settings import Settings
from shared.topology import build_topology
from shared.triggers import parse_training_state_change

SAMPLE = Path(__file__).resolve().parents[2] / "localstack/samples/customers.csv"
SETTINGS = Settings(stage="unit", kit="local-aws")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        s3, sqs, events = (aws_client(n, SETTINGS) for n in ("s3", "sqs", "events"))
        topo = build_topology("unit")
        for b in ("curated", "models"):
            s3.create_bucket(
                Bucket=topo.bucket(b).name,
                CreateBucketConfiguration={"LocationConstraint": "me-central-1"},
            )
        import pandas as pd

        data = tmp_path / "data.parquet"
        pd.read_csv(SAMPLE).to_parquet(data, index=False)
        s3.upload_file(str(data), topo.bucket("curated").name, "datasets/customers/x/data.parquet")
        url = sqs.create_queue(QueueName="ended")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events.put_rule(
            Name="ended",
            EventPattern=json.dumps(
                {
                    "source": ["aws.sagemaker"],
                    "detail-type": ["SageMaker Training Job State Change"],
                }
            ),
        )
        events.put_targets(Rule="ended", Targets=[{"Id": "q", "Arn": arn}])
        yield {"s3": s3, "sqs": sqs, "url": url, "topo": topo}


def request(target: str) -> TrainingJobRequest:
    return TrainingJobRequest(
        dataset="customers",
        sha256="ab" * 32,
        spec_version="1+x",
        trainer_version="0.1.0",
        curated=ObjectRef(container="dhow-unit-curated", key="datasets/customers/x/data.parquet"),
        target=target,
        task="classification",
        instance_types=("local",),
        hyperparameters={"n_estimators": "20", "dhow_dataset": "customers"},
        correlation_id="u-1",
    )


def received(aws: dict[str, Any]) -> Any:
    [m] = aws["sqs"].receive_message(QueueUrl=aws["url"], WaitTimeSeconds=1)["Messages"]
    return parse_training_state_change(m["Body"])


def test_completed_job_uploads_the_model_where_sagemaker_would(aws: dict[str, Any]) -> None:
    detail = run_job(request("churned"), "dhow-unit-customers-job1", SETTINGS)
    assert detail["TrainingJobStatus"] == "Completed"
    ended = received(aws)
    assert ended.status == "Completed"
    assert ended.artifact == (
        "s3://dhow-unit-models/models/customers/dhow-unit-customers-job1/output/model.tar.gz"
    )
    head = aws["s3"].head_object(
        Bucket="dhow-unit-models",
        Key="models/customers/dhow-unit-customers-job1/output/model.tar.gz",
    )
    assert head["ContentLength"] > 0
    assert ended.hyperparameters["dhow_dataset"] == "customers"


def test_a_trainer_crash_is_a_failed_state_with_its_reason_and_log(aws: dict[str, Any]) -> None:
    detail = run_job(request("no_such_column"), "dhow-unit-customers-job2", SETTINGS)
    assert detail["TrainingJobStatus"] == "Failed"
    ended = received(aws)
    assert ended.status == "Failed"
    assert ended.artifact is None
    assert ended.failure_reason is not None
    assert "target 'no_such_column' is not a column" in ended.failure_reason
    assert "--- last log lines ---" in ended.failure_reason


def test_a_spec_entrypoint_runs_instead_of_the_default_trainer(
    aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "own_trainer.py").write_text(
        "import os, pathlib, sys\n"
        "out = pathlib.Path(os.environ['SM_OUTPUT_DIR'])\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'failure').write_text('own trainer ran on ' + os.environ['SM_CHANNEL_TRAIN'])\n"
        "sys.exit(1)\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    req = request("churned").model_copy(update={"entrypoint": "own_trainer"})
    run_job(req, "dhow-unit-customers-job3", SETTINGS)
    ended = received(aws)
    assert ended.failure_reason is not None
    assert ended.failure_reason.startswith("own trainer ran on ")
