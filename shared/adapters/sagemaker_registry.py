"""``ModelRegistry`` on the SageMaker Model Registry: one model package group per dataset.

Metrics and lineage travel as the package's CustomerMetadataProperties
(``metric:<name>`` and ``lineage:<name>``), so the registry alone answers "what
did this version learn from, and how good was it".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from shared.cloud_facts import value
from shared.errors import DhowError, UnknownModelVersion
from shared.identifiers import family_prefix
from shared.ports import ApprovalStatus, ModelRegistry, ModelVersion
from shared.reasons import Reason

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient

_METRIC, _LINEAGE = "metric:", "lineage:"


class SageMakerModelRegistry(ModelRegistry):
    def __init__(self, client: SageMakerClient, stage: str) -> None:
        self._sm = client
        self._stage = stage

    def group(self, dataset: str) -> str:
        # dhow-<stage>--<dataset>: IAM grants model-package-group/<family_prefix>*, which
        # another stage's groups do not match.
        return f"{family_prefix(self._stage)}{dataset}"

    def _ensure_group(self, dataset: str) -> None:
        try:
            self._sm.create_model_package_group(
                ModelPackageGroupName=self.group(dataset),
                ModelPackageGroupDescription=f"Dhow models of dataset {dataset}",
                Tags=[{"Key": "dhow:dataset", "Value": dataset}],
            )
        except ClientError as exc:
            if "already exists" not in str(exc).lower():
                raise

    def register(
        self,
        dataset: str,
        *,
        artifact: str,
        image: str,
        metrics: Mapping[str, float],
        lineage: Mapping[str, str],
        status: ApprovalStatus,
        reason: str | None = None,
    ) -> ModelVersion:
        self._ensure_group(dataset)
        limits = value("aws.sagemaker.model_package_metadata_limits")
        props = {f"{_METRIC}{k}": repr(float(v)) for k, v in metrics.items()}
        # SageMaker refuses an empty value (botocore before sending): an unknown fact is
        # left out, and reads back as absent, rather than failing the registration.
        props |= {f"{_LINEAGE}{k}": str(v) for k, v in lineage.items() if str(v)}
        if len(props) > limits["max_entries"]:
            raise DhowError(
                f"model of {dataset} has {len(props)} metrics and lineage facts; a SageMaker "
                f"model package holds at most {limits['max_entries']}",
                reason=Reason.MODEL_METADATA_TOO_LARGE,
                hint="record fewer metrics in the trainer's metrics.json",
            )
        arn = self._sm.create_model_package(
            ModelPackageGroupName=self.group(dataset),
            ModelPackageDescription=(reason or "")[:1024],
            InferenceSpecification={
                "Containers": [{"Image": image, "ModelDataUrl": artifact}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            ModelApprovalStatus=status,
            CustomerMetadataProperties=props,
        )["ModelPackageArn"]
        return self._version(dataset, self._sm.describe_model_package(ModelPackageName=arn))

    def _version(self, dataset: str, d: Mapping[str, Any]) -> ModelVersion:
        props: Mapping[str, str] = d.get("CustomerMetadataProperties", {})
        container = d["InferenceSpecification"]["Containers"][0]
        return ModelVersion(
            dataset=dataset,
            version=int(d["ModelPackageVersion"]),
            status=cast(ApprovalStatus, d["ModelApprovalStatus"]),
            artifact=container.get("ModelDataUrl", ""),
            image=container.get("Image", ""),
            metrics={
                k[len(_METRIC) :]: float(v) for k, v in props.items() if k.startswith(_METRIC)
            },
            lineage={k[len(_LINEAGE) :]: v for k, v in props.items() if k.startswith(_LINEAGE)},
            status_reason=d.get("ApprovalDescription") or d.get("ModelPackageDescription") or None,
            created_at=d["CreationTime"],
        )

    def versions(self, dataset: str) -> list[ModelVersion]:
        out = []
        paginator = self._sm.get_paginator("list_model_packages")
        try:
            for page in paginator.paginate(
                ModelPackageGroupName=self.group(dataset),
                SortBy="CreationTime",
                SortOrder="Descending",
            ):
                for s in page["ModelPackageSummaryList"]:
                    d = self._sm.describe_model_package(ModelPackageName=s["ModelPackageArn"])
                    out.append(self._version(dataset, d))
        except ClientError as exc:
            if "does not exist" in str(exc).lower() or "not found" in str(exc).lower():
                return []
            raise
        return sorted(out, key=lambda v: v.version, reverse=True)

    def set_status(self, dataset: str, version: int, status: ApprovalStatus, reason: str) -> None:
        arn = self._arn(dataset, version)
        self._sm.update_model_package(
            ModelPackageArn=arn, ModelApprovalStatus=status, ApprovalDescription=reason[:1024]
        )

    def _arn(self, dataset: str, version: int) -> str:
        paginator = self._sm.get_paginator("list_model_packages")
        for page in paginator.paginate(ModelPackageGroupName=self.group(dataset)):
            for v in page["ModelPackageSummaryList"]:
                if int(v.get("ModelPackageVersion", -1)) == version:
                    return v["ModelPackageArn"]
        raise UnknownModelVersion(
            f"{dataset} has no model version {version}",
            hint=f"`dhow models {dataset}` lists the versions",
        )
