"""``ModelRegistry`` on the lineage store: the Azure stack's registry (and its local one).

Each version is one lineage row of its dataset (kind ``model_version``, id
``model-version:000001``), so the registry lives in the stack's own Table storage in
the region, needs no service of its own, and `dhow lineage` shows the versions
beside the runs that made them. Version numbers come from ``put_if_absent``: two
registrations at once cannot take the same number; the loser takes the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from shared.errors import DhowError, UnknownModelVersion
from shared.lineage import LineageKind, ModelVersionRecord
from shared.ports import ApprovalStatus, LineageRecord, LineageStore, ModelRegistry, ModelVersion
from shared.reasons import Reason

_ID_PREFIX = "model-version:"  # Azure Table keys may not hold "#", "/", "\\" or "?"
_MAX_RACES = 50


def model_version_id(version: int) -> str:
    return f"{_ID_PREFIX}{version:06d}"


class LineageModelRegistry(ModelRegistry):
    def __init__(self, lineage: LineageStore) -> None:
        self._lineage = lineage

    def _rows(self, dataset: str) -> list[LineageRecord]:
        return [r for r in self._lineage.list(dataset) if r.kind == LineageKind.MODEL_VERSION]

    @staticmethod
    def _version(row: LineageRecord) -> ModelVersion:
        a = row.attributes
        return ModelVersion(
            dataset=row.dataset,
            version=int(a["version"]),
            status=cast(ApprovalStatus, row.status),
            artifact=str(a["artifact"]),
            image=str(a["image"]),
            metrics={str(k): float(v) for k, v in a.get("metrics", {}).items()},
            lineage={str(k): str(v) for k, v in a.get("lineage", {}).items()},
            status_reason=a.get("status_reason") or None,
            created_at=row.created_at,
        )

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
        number = max((int(r.attributes["version"]) for r in self._rows(dataset)), default=0) + 1
        for _ in range(_MAX_RACES):
            row = ModelVersionRecord(
                dataset=dataset,
                record_id=model_version_id(number),
                status=status,
                attributes={
                    "version": number,
                    "artifact": artifact,
                    "image": image,
                    "metrics": {k: float(v) for k, v in metrics.items()},
                    "lineage": dict(lineage),
                    "status_reason": reason or "",
                },
            )
            if self._lineage.put_if_absent(row):
                return self._version(row)
            number += 1  # another registration took this number first
        raise DhowError(
            f"could not take a version number for {dataset} after {_MAX_RACES} tries",
            hint="too many registrations at once; the message will be retried",
            reason=Reason.REGISTRY_CONTENTION,
        )

    def versions(self, dataset: str) -> list[ModelVersion]:
        return sorted(
            (self._version(r) for r in self._rows(dataset)), key=lambda v: v.version, reverse=True
        )

    def set_status(self, dataset: str, version: int, status: ApprovalStatus, reason: str) -> None:
        for _ in range(_MAX_RACES):
            row = self._lineage.get(dataset, model_version_id(version))
            if row is None:
                raise UnknownModelVersion(
                    f"{dataset} has no model version {version}",
                    hint=f"`dhow models {dataset}` lists the versions",
                )
            updated = row.model_copy(
                update={
                    "status": status,
                    "attributes": {**row.attributes, "status_reason": reason[:1024]},
                }
            )
            if self._lineage.replace(updated, row.revision):
                return
        raise DhowError(
            f"{dataset} version {version} kept changing while its status was set",
            hint="retry the command",
            reason=Reason.REGISTRY_CONTENTION,
        )
