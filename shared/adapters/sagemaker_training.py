"""SageMaker training: a GPU job in the pinned region, after a check of the account's quota.

The job name derives from the dataset hash, spec version and trainer version,
so a duplicate ``DatasetValidated`` finds the job instead of starting another.
Before creating it, the account's Service Quotas for the spec's instance types
are read in order: a type whose quota is 0 is passed over, with the quota's
name and code, and the first type with room is used. When none has room the
answer names every quota to raise.

The job runs ``shared/trainer.py`` in SageMaker's XGBoost image through the image's
script mode: with no ``sagemaker_program`` hyperparameter the image runs its built-in
algorithm instead, which needs ``num_round`` and refuses our hyperparameters
(aws/sagemaker-xgboost-container, ``training.py``). The job is network-isolated, so the
trainer's source cannot be fetched from S3 by the container: it arrives as the input
channel ``code`` (a ``sourcedir.tar.gz`` the stack uploads), and
``sagemaker_submit_directory`` names its path inside the container, as the SageMaker
SDK's Framework estimator does for an isolated job.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from shared import trainer
from shared.cloud_facts import value
from shared.errors import DhowError
from shared.identifiers import name_digest, sagemaker_name
from shared.ports import LaunchedTraining, TrainingJobRequest, TrainingLauncher
from shared.reasons import Reason

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_service_quotas import ServiceQuotasClient

log = logging.getLogger(__name__)

# The trainer is one file that imports nothing of Dhow's (tests/unit/test_trainer.py keeps
# it so): the code channel carries it alone, at the archive's root, as the SDK packs an
# entry point given without a source_dir.
TRAINER_SOURCE = Path(trainer.__file__)
TRAINER_PROGRAM = TRAINER_SOURCE.name
SCRIPT_MODE = "aws.sagemaker.xgboost_script_mode"
CHANNELS = "aws.sagemaker.training_input_channels"
INSTANCE_STORAGE = "aws.sagemaker.instance_storage_families"


def trainer_code_key(source: Path = TRAINER_SOURCE) -> str:
    """The S3 key of the trainer's ``sourcedir.tar.gz`` in the models bucket. It derives
    from the trainer's bytes only, so the stack (which uploads it) and train-launch (which
    ships the same file in its package) agree on it without a setting between them, and a
    job always runs the trainer its launcher was deployed with."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    return f"code/trainer/{digest}/{value(SCRIPT_MODE)['archive']}"


def has_instance_storage(instance_type: str) -> bool:
    """Whether ``instance_type`` (``ml.g5.xlarge``) has local NVMe instance storage, on
    which SageMaker refuses a KMS key for the volume (the hardware encrypts it)."""
    rule = value(INSTANCE_STORAGE)
    family = instance_type.removeprefix("ml.").split(".", 1)[0]
    return rule["family_contains"] in family or family.startswith(tuple(rule["family_prefixes"]))


def script_mode_hyperparameters(
    user: dict[str, str], *, job_name: str, region: str
) -> dict[str, str]:
    """The hyperparameters of a script-mode job, each value JSON-encoded as the SDK's
    Framework estimator sends them (the container JSON-decodes each one back)."""
    mode = value(SCRIPT_MODE)
    params: dict[str, Any] = {
        **user,
        mode["program_param"]: TRAINER_PROGRAM,
        mode["submit_directory_param"]: mode["container_sourcedir"],
        "sagemaker_container_log_level": logging.INFO,
        "sagemaker_job_name": job_name,
        "sagemaker_region": region,
    }
    return {k: json.dumps(v) for k, v in params.items()}


class TooManyTrainingInputs(DhowError):
    """A run would learn from more curated versions than a training job has channels."""

    reason = Reason.TOO_MANY_TRAINING_INPUTS


def train_channel_names(count: int) -> list[str]:
    """``train``, ``train_1``, ...: the trainer reads SM_CHANNEL_TRAIN, SM_CHANNEL_TRAIN_1,
    ... (the toolkit names each channel's variable SM_CHANNEL_<NAME upper-cased>)."""
    return ["train" if i == 0 else f"train_{i}" for i in range(count)]


class GpuQuotaUnavailable(DhowError):
    """Every instance type the spec lists has a training quota of 0 in this account."""

    reason = Reason.GPU_QUOTA_ZERO


@dataclass(frozen=True)
class TrainingJobConfig:
    """Deploy-time facts; the image URI is resolved for the region when the stack is built."""

    image_uri: str
    role_arn: str
    name_prefix: str  # dhow-<stage>: the register rule matches it
    output_s3_uri: str  # s3://bucket/prefix, models land under <prefix>/<dataset>/
    checkpoint_s3_uri: str
    code_s3_uri: str  # the trainer's sourcedir.tar.gz (s3://<models>/<trainer_code_key()>)
    kms_key_id: str
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    region: str
    volume_gb: int = 50
    # Spot jobs may wait for capacity up to this multiple of their runtime.
    spot_wait_factor: int = 2


def training_job_name(req: TrainingJobRequest, prefix: str) -> str:
    """Deterministic, and a valid SageMaker name (fact ``aws.sagemaker.resource_name``);
    ``prefix`` is ``dhow-<stage>``, which the register rule matches, kept whole.

    The tail (``<data hash8>-<run id12>``) is never cut: the run id digests the dataset,
    its data, spec and trainer versions and the run tag, so two distinct runs never share
    a name, however long the stage or the dataset. Only the dataset is shortened (a
    longest stage leaves it 14 characters), and it is spelled with ``-`` for ``_``.
    """
    key = f"{req.sha256}|{req.spec_version}|{req.trainer_version}|{req.run_tag}|{req.dataset}"
    if len(req.training_inputs) > 1:
        # A run on several versions is another run than one on its newest alone (a run on
        # one keeps the name it had before learn_from existed).
        key += "|" + ",".join(sorted(req.data_sha256s))
    ident = name_digest(key, 12)
    return sagemaker_name(prefix, req.dataset, f"{req.sha256[:8]}-{ident}", tail_digests_body=True)


def quota_name(instance_type: str, spot: bool) -> str:
    return f"{instance_type} for {'spot ' if spot else ''}training job usage"


class SageMakerTrainingLauncher(TrainingLauncher):
    """``TrainingLauncher`` on SageMaker training jobs."""

    def __init__(
        self, sagemaker: SageMakerClient, quotas: ServiceQuotasClient, config: TrainingJobConfig
    ) -> None:
        self._sm = sagemaker
        self._quotas = quotas
        self._cfg = config

    def _quota_values(self, spot: bool) -> dict[str, tuple[str, float]]:
        """Quota name -> (code, value) for SageMaker training in this account and region."""
        out: dict[str, tuple[str, float]] = {}
        kind = "for spot training job usage" if spot else "for training job usage"
        for page in self._quotas.get_paginator("list_service_quotas").paginate(
            ServiceCode="sagemaker"
        ):
            for q in page.get("Quotas", []):
                name = q.get("QuotaName", "")
                if name.endswith(kind) and (spot or " spot " not in name):
                    out[name] = (q.get("QuotaCode", "?"), float(q.get("Value", 0)))
        return out

    def _existing(self, name: str) -> bool:
        try:
            self._sm.describe_training_job(TrainingJobName=name)
        except ClientError as exc:
            if "not found" in str(exc).lower() or exc.response["Error"]["Code"] in (
                "ResourceNotFound",
                "ValidationException",
            ):
                return False
            raise
        return True

    def choose_instance_type(self, req: TrainingJobRequest) -> tuple[str, tuple[str, ...]]:
        """The first listed type whose quota has room; raises ``GpuQuotaUnavailable``."""
        quotas = self._quota_values(req.use_spot)
        skipped: list[str] = []
        for instance_type in req.instance_types:
            name = quota_name(instance_type, req.use_spot)
            code, value = quotas.get(name, ("", -1.0))
            if value == 0:
                skipped.append(f"{instance_type}: quota '{name}' ({code}) is 0")
                log.warning("skipping %s: quota %r (%s) is 0", instance_type, name, code)
                continue
            # Not listed (-1) means Service Quotas does not know the type; let SageMaker judge.
            return instance_type, tuple(skipped)
        raise GpuQuotaUnavailable(
            f"no training capacity for {req.dataset}: " + "; ".join(skipped),
            hint=f"raise one of these quotas in Service Quotas ({self._cfg.region}), "
            "or list another instance type in the spec's training.instance_types",
        )

    def request(self, req: TrainingJobRequest, instance_type: str) -> dict[str, Any]:
        """The exact CreateTrainingJob parameters (tested field by field)."""
        cfg = self._cfg
        name = training_job_name(req, cfg.name_prefix)
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": req.max_runtime_s}
        hyperparameters = req.job_hyperparameters
        inputs = req.training_inputs
        room = int(value(CHANNELS)["max"]) - (1 if req.image is None else 0)
        if len(inputs) > room:
            raise TooManyTrainingInputs(
                f"{req.dataset}: a run on {len(inputs)} curated versions needs as many "
                f"channels; a SageMaker training job has room for {room}",
                hint=f"ask the spec's training.learn_from for at most {room} uploads "
                "(last: N, or a later since)",
            )
        # One channel per curated version (an S3Prefix of one object), oldest first.
        channels: list[dict[str, Any]] = [
            {
                "ChannelName": channel,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{ref.container}/{ref.key}",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "application/x-parquet",
                "InputMode": "File",
            }
            for channel, ref in zip(train_channel_names(len(inputs)), inputs, strict=True)
        ]
        if req.image is None:
            # Our trainer in the framework image: script mode, its code as a channel.
            hyperparameters = script_mode_hyperparameters(
                hyperparameters, job_name=name, region=cfg.region
            )
            channels.append(
                {
                    "ChannelName": value(SCRIPT_MODE)["code_channel"],
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": cfg.code_s3_uri,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                }
            )
        resources: dict[str, Any] = {
            "InstanceType": instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": cfg.volume_gb,
        }
        if not has_instance_storage(instance_type):
            # Elsewhere the instance store is encrypted by the hardware, and SageMaker
            # refuses the job if a volume key is named.
            resources["VolumeKmsKeyId"] = cfg.kms_key_id
        params: dict[str, Any] = {
            "TrainingJobName": name,
            "AlgorithmSpecification": {
                "TrainingImage": req.image or cfg.image_uri,
                "TrainingInputMode": "File",
            },
            "RoleArn": cfg.role_arn,
            "HyperParameters": hyperparameters,
            "InputDataConfig": channels,
            "OutputDataConfig": {
                "S3OutputPath": f"{cfg.output_s3_uri.rstrip('/')}/{req.dataset}/",
                "KmsKeyId": cfg.kms_key_id,
            },
            "ResourceConfig": resources,
            "StoppingCondition": stopping,
            "VpcConfig": {
                "SecurityGroupIds": list(cfg.security_groups),
                "Subnets": list(cfg.subnets),
            },
            # No internet from the training container, and encrypted traffic between
            # its instances: the bytes stay in the account's private subnets.
            "EnableNetworkIsolation": True,
            "EnableInterContainerTrafficEncryption": True,
            "EnableManagedSpotTraining": req.use_spot,
            "Tags": [
                {"Key": "dhow:dataset", "Value": req.dataset},
                {"Key": "dhow:sha256", "Value": req.sha256},
                {"Key": "dhow:spec-version", "Value": req.spec_version},
                {"Key": "dhow:trainer-version", "Value": req.trainer_version},
                {"Key": "dhow:correlation-id", "Value": req.correlation_id},
            ],
        }
        if req.use_spot:
            stopping["MaxWaitTimeInSeconds"] = req.max_runtime_s * cfg.spot_wait_factor
            params["CheckpointConfig"] = {
                "S3Uri": f"{cfg.checkpoint_s3_uri.rstrip('/')}/{name}/",
                "LocalPath": "/opt/ml/checkpoints",
            }
        return params

    def launch(self, request: TrainingJobRequest) -> LaunchedTraining:
        name = training_job_name(request, self._cfg.name_prefix)
        if self._existing(name):
            return LaunchedTraining(job_name=name, instance_type=None, created=False)
        instance_type, skipped = self.choose_instance_type(request)
        try:
            self._sm.create_training_job(**self.request(request, instance_type))
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUse":
                raise
            return LaunchedTraining(job_name=name, instance_type=None, created=False)
        return LaunchedTraining(
            job_name=name, instance_type=instance_type, created=True, skipped=skipped
        )
