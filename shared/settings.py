"""One typed settings object, built once from the environment, with UAE region pinning.

A region outside the allow-list is refused when the settings are built, which is
at import time of every handler and at the start of every CLI command: the
process stops before any client exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast, get_args

from shared import constants as c
from shared.errors import ConfigError, RegionNotAllowed

Cloud = Literal["aws", "azure"]
# The clouds a setting may name (each has a kit in shared.clouds).
CLOUDS: tuple[str, ...] = get_args(Cloud)
# A stage is the prefix of every resource name (settings and the Pulumi program check it).
# Words of letters and digits joined by single hyphens: never "--" nor a trailing "-",
# which end the stage's part of a name matched by a wildcard (identifiers.family_prefix).
STAGE_RE = re.compile(r"^(?=.{2,21}$)[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_ACCOUNT_RE = re.compile(r"^[0-9]{12}$")


def check_aws_region(region: str) -> str:
    """Return ``region`` if Dhow may run there, else raise ``RegionNotAllowed``."""
    if region not in c.AWS_REGIONS_ALLOWED:
        raise RegionNotAllowed(
            f"AWS region {region!r} is not allowed",
            hint=f"Dhow runs only in {', '.join(c.AWS_REGIONS_ALLOWED)}; "
            f"set {c.AWS_REGION}={c.AWS_REGIONS_ALLOWED[0]}",
        )
    return region


def check_azure_location(location: str) -> str:
    """Return ``location`` if Dhow may run there, else raise ``RegionNotAllowed``."""
    normalised = location.replace(" ", "").lower()
    if normalised not in c.AZURE_LOCATIONS_ALLOWED:
        raise RegionNotAllowed(
            f"Azure location {location!r} is not allowed",
            hint=f"Dhow runs only in {' or '.join(c.AZURE_LOCATIONS_ALLOWED)}; "
            f"set {c.AZURE_LOCATION}={c.AZURE_LOCATIONS_ALLOWED[0]}",
        )
    return normalised


@dataclass(frozen=True)
class Settings:
    """Everything a function or the CLI needs to know about where it runs."""

    cloud: Cloud = "aws"
    # The registered kit that builds the ports (shared/clouds.kit_for); None: the cloud's.
    kit: str | None = None
    stage: str = "local"
    aws_region: str = c.AWS_REGIONS_ALLOWED[0]
    # The stack's account: S3 calls carry it as ExpectedBucketOwner (unset locally).
    aws_account_id: str | None = None
    azure_location: str = c.AZURE_LOCATIONS_ALLOWED[0]
    aws_endpoint_url: str | None = None
    aws_dynamodb_endpoint_url: str | None = None
    aws_sagemaker_endpoint_url: str | None = None
    training_image_uri: str | None = None
    azure_storage_connection_string: str | None = None
    azure_eventgrid_endpoint: str | None = None
    azure_storage_account: str | None = None
    max_upload_bytes: int = c.DEFAULT_MAX_UPLOAD_BYTES
    ingest_claim_seconds: int = 900
    specs_dir: str | None = None
    validate_inline_max_bytes: int = 2 * 1024**3
    validate_chunk_rows: int = 100_000
    processing_image_uri: str | None = None
    sagemaker_role_arn: str | None = None
    kms_key_id: str | None = None
    private_subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    azureml_workspace: tuple[str, str, str] | None = None  # subscription, group, workspace
    azureml_compute: str | None = None
    azureml_environment: str | None = None
    azureml_staging_datastore: str | None = None
    azureml_gpu_compute: str | None = None
    azureml_train_environment: str | None = None
    azureml_curated_datastore: str | None = None
    azureml_models_datastore: str | None = None
    azureml_serve_environment: str | None = None
    azureml_serving_instance_type: str | None = None
    inference_image_uri: str | None = None
    serve_dataset: str | None = None
    serve_model_version: int | None = None
    local_minute_seconds: float = 60.0
    alerts_topic_arn: str | None = None

    def __post_init__(self) -> None:
        if self.cloud not in CLOUDS:
            raise ConfigError(
                f"unknown cloud {self.cloud!r}", hint=f"set {c.CLOUD} to 'aws' or 'azure'"
            )
        if not STAGE_RE.match(self.stage):
            raise ConfigError(
                f"stage name {self.stage!r} is not usable in resource names",
                hint=f"set {c.STAGE} to 2-21 lowercase letters, digits or single '-' "
                "between them, starting with a letter",
            )
        check_aws_region(self.aws_region)
        if self.aws_account_id is not None and not _ACCOUNT_RE.match(self.aws_account_id):
            raise ConfigError(
                f"AWS account id {self.aws_account_id!r} is not 12 digits",
                hint=f"set {c.AWS_ACCOUNT_ID} to the account that owns the stack's buckets",
            )
        object.__setattr__(self, "azure_location", check_azure_location(self.azure_location))
        if self.max_upload_bytes <= 0:
            raise ConfigError(
                f"{c.MAX_UPLOAD_BYTES} must be a positive number of bytes",
                hint=f"got {self.max_upload_bytes}",
            )

    def to_env(self) -> dict[str, str]:
        """The variables that make ``from_env`` build these settings again in a child
        process (the runner, a local training job)."""
        env = {
            c.CLOUD: self.cloud,
            c.STAGE: self.stage,
            c.AWS_REGION: self.aws_region,
            c.AWS_DEFAULT_REGION: self.aws_region,
            c.AZURE_LOCATION: self.azure_location,
            c.MAX_UPLOAD_BYTES: str(self.max_upload_bytes),
            c.INGEST_CLAIM_SECONDS: str(self.ingest_claim_seconds),
            c.VALIDATE_INLINE_MAX_BYTES: str(self.validate_inline_max_bytes),
            c.VALIDATE_CHUNK_ROWS: str(self.validate_chunk_rows),
            c.LOCAL_MINUTE_SECONDS: str(self.local_minute_seconds),
        }
        optional = {
            c.KIT: self.kit,
            c.AWS_ACCOUNT_ID: self.aws_account_id,
            c.AWS_ENDPOINT_URL: self.aws_endpoint_url,
            c.AWS_DYNAMODB_ENDPOINT_URL: self.aws_dynamodb_endpoint_url,
            c.AWS_SAGEMAKER_ENDPOINT_URL: self.aws_sagemaker_endpoint_url,
            c.AZURE_STORAGE_CONNECTION_STRING: self.azure_storage_connection_string,
            c.AZURE_EVENTGRID_ENDPOINT: self.azure_eventgrid_endpoint,
            c.AZURE_STORAGE_ACCOUNT: self.azure_storage_account,
            c.SPECS_DIR: self.specs_dir,
            c.TRAINING_IMAGE_URI: self.training_image_uri,
            c.INFERENCE_IMAGE_URI: self.inference_image_uri,
            c.SERVE_DATASET: self.serve_dataset,
            c.ALERTS_TOPIC_ARN: self.alerts_topic_arn,
            c.SERVE_MODEL_VERSION: str(self.serve_model_version)
            if self.serve_model_version is not None
            else None,
        }
        env.update({k: v for k, v in optional.items() if v})
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from environment variables (``os.environ`` by default).

        Both ``AWS_REGION`` and ``AWS_DEFAULT_REGION`` are checked: boto3 would
        fall back to the second, so a stray value there is refused too.
        """
        env = os.environ if environ is None else environ
        region = env.get(c.AWS_REGION) or env.get(c.AWS_DEFAULT_REGION) or c.AWS_REGIONS_ALLOWED[0]
        for name in (c.AWS_REGION, c.AWS_DEFAULT_REGION):
            if env.get(name):
                check_aws_region(env[name])
        return cls(
            cloud=_cloud(env.get(c.CLOUD, "aws")),
            kit=env.get(c.KIT) or None,
            stage=env.get(c.STAGE, "local"),
            aws_region=region,
            aws_account_id=env.get(c.AWS_ACCOUNT_ID) or None,
            azure_location=env.get(c.AZURE_LOCATION, c.AZURE_LOCATIONS_ALLOWED[0]),
            aws_endpoint_url=env.get(c.AWS_ENDPOINT_URL) or None,
            aws_dynamodb_endpoint_url=env.get(c.AWS_DYNAMODB_ENDPOINT_URL) or None,
            aws_sagemaker_endpoint_url=env.get(c.AWS_SAGEMAKER_ENDPOINT_URL) or None,
            training_image_uri=env.get(c.TRAINING_IMAGE_URI) or None,
            azure_storage_connection_string=env.get(c.AZURE_STORAGE_CONNECTION_STRING) or None,
            azure_eventgrid_endpoint=env.get(c.AZURE_EVENTGRID_ENDPOINT) or None,
            azure_storage_account=env.get(c.AZURE_STORAGE_ACCOUNT) or None,
            max_upload_bytes=_int(env, c.MAX_UPLOAD_BYTES, c.DEFAULT_MAX_UPLOAD_BYTES),
            ingest_claim_seconds=_int(env, c.INGEST_CLAIM_SECONDS, 900),
            specs_dir=env.get(c.SPECS_DIR) or None,
            validate_inline_max_bytes=_int(env, c.VALIDATE_INLINE_MAX_BYTES, 2 * 1024**3),
            validate_chunk_rows=_int(env, c.VALIDATE_CHUNK_ROWS, 100_000),
            processing_image_uri=env.get(c.PROCESSING_IMAGE_URI) or None,
            sagemaker_role_arn=env.get(c.SAGEMAKER_ROLE_ARN) or None,
            kms_key_id=env.get(c.KMS_KEY_ID) or None,
            private_subnets=_csv(env.get(c.PRIVATE_SUBNETS)),
            security_groups=_csv(env.get(c.SECURITY_GROUPS)),
            azureml_workspace=_workspace(env),
            azureml_compute=env.get(c.AZUREML_COMPUTE) or None,
            azureml_environment=env.get(c.AZUREML_ENVIRONMENT) or None,
            azureml_staging_datastore=env.get(c.AZUREML_STAGING_DATASTORE) or None,
            azureml_gpu_compute=env.get(c.AZUREML_GPU_COMPUTE) or None,
            azureml_train_environment=env.get(c.AZUREML_TRAIN_ENVIRONMENT) or None,
            azureml_curated_datastore=env.get(c.AZUREML_CURATED_DATASTORE) or None,
            azureml_models_datastore=env.get(c.AZUREML_MODELS_DATASTORE) or None,
            azureml_serve_environment=env.get(c.AZUREML_SERVE_ENVIRONMENT) or None,
            azureml_serving_instance_type=env.get(c.AZUREML_SERVING_INSTANCE_TYPE) or None,
            inference_image_uri=env.get(c.INFERENCE_IMAGE_URI) or None,
            serve_dataset=env.get(c.SERVE_DATASET) or None,
            serve_model_version=_int(env, c.SERVE_MODEL_VERSION, 0) or None,
            local_minute_seconds=_float(env, c.LOCAL_MINUTE_SECONDS, 60.0),
            alerts_topic_arn=env.get(c.ALERTS_TOPIC_ARN) or None,
        )


def _cloud(value: str) -> Cloud:
    if value in CLOUDS:
        return cast(Cloud, value)
    raise ConfigError(f"unknown cloud {value!r}", hint=f"set {c.CLOUD} to 'aws' or 'azure'")


def _workspace(env: Mapping[str, str]) -> tuple[str, str, str] | None:
    parts = tuple(
        env.get(n, "")
        for n in (c.AZUREML_SUBSCRIPTION_ID, c.AZUREML_RESOURCE_GROUP, c.AZUREML_WORKSPACE)
    )
    if not any(parts):
        return None
    if not all(parts):
        raise ConfigError(
            "the Azure ML workspace is only partly configured",
            hint=f"set all of {c.AZUREML_SUBSCRIPTION_ID}, {c.AZUREML_RESOURCE_GROUP} and "
            f"{c.AZUREML_WORKSPACE}, or none",
        )
    return (parts[0], parts[1], parts[2])


def _csv(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number", hint=f"got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive", hint=f"got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number", hint=f"got {raw!r}") from None
