"""`python -m dhow_local.training_job`: one training job of the local backend.

It lays out SageMaker's directories under a temporary root, downloads the
curated data into the train channel (each version a run learns from into its own,
``train``, ``train_1``, ... as SageMaker mounts them), runs the trainer in a subprocess with the
SM_* variables, uploads ``model.tar.gz`` to the same path SageMaker would use
(``<models>/models/<dataset>/<job>/output/model.tar.gz``), and publishes the
"SageMaker Training Job State Change" event. A crash of the trainer becomes a
``Failed`` state with the trainer's own failure reason and its last log lines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dhow_local.kit import local_kit
from shared.events import ObjectRef
from shared.identifiers import stage_name
from shared.jobs.model_archive import MODEL_ARCHIVE, write_model_archive
from shared.layout import model_output_prefix
from shared.ports import TrainingJobRequest
from shared.settings import Settings
from shared.topology import build_topology
from shared.triggers import (
    AZUREML_RUN_STATUS_CHANGED,
    TAG_ARTIFACT,
    TAG_COMPUTE,
    TAG_FAILURE,
    TAG_HYPERPARAMETERS,
    TAG_IMAGE,
)
from shared.wiring import build_ports

LOG_TAIL_LINES = 20


def run_job(req: TrainingJobRequest, job_name: str, settings: Settings) -> dict[str, Any]:
    topo = build_topology(settings.stage)
    ports = build_ports(settings, topo)
    models = topo.bucket("models").name
    output = ObjectRef(
        container=models, key=model_output_prefix(req.dataset, job_name) + MODEL_ARCHIVE
    )
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="dhow-train-") as tmp:
        root = Path(tmp)
        # One channel per curated version, as SageMaker mounts them (train, train_1, ...).
        channels: dict[str, str] = {}
        for i, ref in enumerate(req.training_inputs):
            name = "train" if i == 0 else f"train_{i}"
            folder = root / "input/data" / name
            folder.mkdir(parents=True)
            ports.store.download(ref, folder / "data.parquet")
            channels[f"SM_CHANNEL_{name.upper()}"] = str(folder)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SM_CHANNEL_")},
            **channels,
            "SM_MODEL_DIR": str(root / "model"),
            "SM_OUTPUT_DATA_DIR": str(root / "output/data"),
            "SM_OUTPUT_DIR": str(root / "output"),
            "SM_NUM_GPUS": "0",
            "SM_HPS": json.dumps(req.job_hyperparameters),
        }
        r = subprocess.run(
            [sys.executable, "-m", req.entrypoint or "shared.trainer"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        status, reason = "Completed", None
        if r.returncode != 0:
            status = "Failed"
            failure = root / "output/failure"
            tail = "\n".join((r.stdout + r.stderr).splitlines()[-LOG_TAIL_LINES:])
            reason = failure.read_text() if failure.exists() else "the trainer crashed"
            reason = f"{reason}\n--- last log lines ---\n{tail}"[:1024]
        else:
            archive = write_model_archive(root / "model", root / MODEL_ARCHIVE)
            ports.store.upload_file(output, archive, {"job_name": job_name})
    ended = datetime.now(UTC)
    detail: dict[str, Any] = {
        "TrainingJobName": job_name,
        "TrainingJobArn": f"arn:aws:sagemaker:{settings.aws_region}:000000000000:"
        f"training-job/{job_name}",
        "TrainingJobStatus": status,
        "SecondaryStatus": status,
        "HyperParameters": req.job_hyperparameters,
        "AlgorithmSpecification": {
            "TrainingImage": "local:shared.trainer",
            "TrainingInputMode": "File",
        },
        "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 0},
        "CreationTime": int(started.timestamp() * 1000),
        "TrainingEndTime": int(ended.timestamp() * 1000),
    }
    if status == "Completed":
        detail["ModelArtifacts"] = {"S3ModelArtifacts": f"s3://{output.container}/{output.key}"}
    else:
        detail["FailureReason"] = reason
    # As the cloud's training service announces it: SageMaker's state change on the
    # default bus, or Azure ML's RunStatusChanged through the local Event Grid.
    local_kit(settings).publish_training_ended(detail, output)
    return detail


def azureml_run_status_changed(
    settings: Settings, detail: dict[str, Any], output: ObjectRef
) -> dict[str, Any]:
    """The local job's end as Azure ML's ``RunStatusChanged`` event (Event Grid schema),
    with the run tags the Azure ML launcher sets."""
    job = detail["TrainingJobName"]
    workspace = stage_name(settings.stage, "local")
    status = {"Completed": "Completed", "Failed": "Failed", "Stopped": "Canceled"}
    tags = {
        TAG_HYPERPARAMETERS: json.dumps(detail["HyperParameters"], sort_keys=True),
        TAG_COMPUTE: "local",
        TAG_IMAGE: detail["AlgorithmSpecification"]["TrainingImage"],
    }
    if detail["TrainingJobStatus"] == "Completed":
        tags[TAG_ARTIFACT] = output.uri
    else:
        tags[TAG_FAILURE] = detail["FailureReason"]
    return {
        "id": str(uuid.uuid4()),
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/"
        f"{workspace}/providers/Microsoft.MachineLearningServices/workspaces/{workspace}",
        "subject": f"experiment/dhow-train/run/{job}",
        "eventType": AZUREML_RUN_STATUS_CHANGED,
        "eventTime": datetime.now(UTC).isoformat(),
        "dataVersion": "2",
        "metadataVersion": "1",
        "data": {
            "experimentId": str(uuid.uuid5(uuid.NAMESPACE_URL, workspace)),
            "experimentName": "dhow-train",
            "runId": job,
            "runType": "azureml.scriptrun",
            "runTags": tags,
            "runProperties": {},
            "runStatus": status[detail["TrainingJobStatus"]],
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dhow_local.training_job")
    p.add_argument("--request", type=Path, required=True)
    p.add_argument("--job-name", required=True)
    args = p.parse_args(argv)
    req = TrainingJobRequest.model_validate_json(args.request.read_text())
    args.request.unlink(missing_ok=True)
    detail = run_job(req, args.job_name, Settings.from_env())
    return 0 if detail["TrainingJobStatus"] == "Completed" else 1


if __name__ == "__main__":
    sys.exit(main())
