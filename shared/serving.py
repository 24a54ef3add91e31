"""What the serve function knows about a model: which version, its verified bytes, and
the shape of a request row, all derived from the registry and the dataset's spec.

The request contract is built from the spec's pandera schema (every column but the
target, with its type, bounds and categories), so a request that names a wrong
column or sends a wrong type is refused with the column's name before the model
sees it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from shared.artifacts import ARTIFACT_SHA256, fetch_model
from shared.errors import DhowError
from shared.events import ObjectRef
from shared.ports import ModelRegistry, ModelVersion, ObjectStore
from shared.specs import DatasetSpec

log = logging.getLogger(__name__)

# The largest batch one request may carry; Lambda's payload limit (6 MB) is reached
# at about this many rows of a 20-column table anyway.
MAX_BATCH_ROWS = 10_000

_CHECK_BOUNDS = {
    "greater_than_or_equal_to": "ge",
    "greater_than": "gt",
    "less_than_or_equal_to": "le",
    "less_than": "lt",
}


class ModelNotServable(DhowError):
    """No approved model, or the asked-for version, can be served."""

    reason = "model_not_servable"


class PredictionFailed(DhowError):
    """The model raised on a request that passed the schema."""

    reason = "prediction_failed"


def _python_type(dtype: str) -> Any:
    d = dtype.lower()
    if d.startswith(("int", "uint")):
        return int
    if d.startswith("float"):
        return float
    if d.startswith("bool"):
        return bool
    if d.startswith("datetime"):
        return datetime
    return str


def request_row_model(spec: DatasetSpec) -> type[BaseModel]:
    """A pydantic model of one request row, from the spec's schema.

    Unique columns (identifiers) may be left out: no model learns from them, but a
    caller may send them so that captured rows can be traced. Nullable columns
    accept null. Unknown columns are refused.
    """
    fields: dict[str, Any] = {}
    for name, col in (spec.schema_doc.get("columns") or {}).items():
        if name == spec.target:
            continue
        col = col or {}
        checks = {**col, **(col.get("checks") or {})}
        py: Any = _python_type(str(col.get("dtype", "object")))
        allowed = checks.get("isin")
        if allowed:
            py = Literal[tuple(allowed)]
        constraints = {
            arg: checks[key]
            for key, arg in _CHECK_BOUNDS.items()
            if key in checks and py in (int, float)
        }
        optional = bool(col.get("nullable")) or bool(col.get("unique"))
        if optional:
            fields[name] = (py | None, Field(default=None, **constraints))
        else:
            fields[name] = (py, Field(**constraints))
    return create_model(
        f"{spec.name.title().replace('-', '').replace('_', '')}Row",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )


@dataclass
class LoadedModel:
    """A model version whose artifact was verified and loaded, ready to predict."""

    dataset: str
    version: ModelVersion
    artifact_sha256: str
    card: dict[str, Any]
    model: Any

    @property
    def features(self) -> list[str]:
        return list(self.card["features"])

    def predict(self, rows: list[dict[str, Any]]) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions (labels for classification) and class scores where there are any."""
        import pandas as pd

        frame = pd.DataFrame.from_records(rows)
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise PredictionFailed(
                f"model v{self.version.version} needs columns {missing} that the request lacks",
                hint="send every column of the dataset's spec",
            )
        x = frame[self.features]
        labels = self.card.get("labels")
        if self.card.get("task") == "classification" and labels:
            scores = self.model.predict_proba(x)
            picked = scores.argmax(axis=1)
            return [labels[i] for i in picked], [[float(p) for p in row] for row in scores]
        return [float(v) for v in self.model.predict(x)], None


def load_model_version(
    store: ObjectStore,
    registry: ModelRegistry,
    dataset: str,
    version: int | None,
    workdir: Path | None = None,
) -> LoadedModel:
    """Version ``version`` (the champion if None), verified against its recorded hash."""
    import joblib

    from shared.trainer import MODEL_FILE

    if version is None:
        chosen = registry.champion(dataset)
        if chosen is None:
            raise ModelNotServable(
                f"{dataset} has no approved model version",
                hint=f"upload data to train one; `dhow models {dataset}` lists the versions",
            )
    else:
        chosen = registry.version(dataset, version)
        if chosen is None:
            raise ModelNotServable(
                f"{dataset} has no model version {version}",
                hint=f"`dhow models {dataset}` lists the versions",
            )
    expected = chosen.lineage.get(ARTIFACT_SHA256)
    if not expected:
        raise ModelNotServable(
            f"{dataset} v{chosen.version} has no recorded artifact hash, so it cannot be verified",
            hint="register it again (versions registered by Dhow's register carry one)",
        )
    into = Path(tempfile.mkdtemp(prefix=f"dhow-serve-{dataset}-v{chosen.version}-", dir=workdir))
    model_dir, sha = fetch_model(store, ObjectRef.from_uri(chosen.artifact), into, expected)
    card = json.loads((model_dir / "model.json").read_text())
    model = joblib.load(model_dir / MODEL_FILE)
    log.info("loaded %s v%s (%s)", dataset, chosen.version, sha[:12])
    return LoadedModel(dataset, chosen, sha, card, model)


@dataclass
class ModelSlot:
    """One model version, loaded once per warm container on first use.

    A failed load is not cached: the next request tries again (a transient storage
    error must not keep a container broken), and the error says what went wrong.
    """

    loader: Any  # () -> LoadedModel
    _model: LoadedModel | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> LoadedModel:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self.loader()
        return self._model

    @property
    def loaded(self) -> LoadedModel | None:
        return self._model


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[Any]
    scores: list[list[float]] | None = None
    labels: list[str] | None = None
