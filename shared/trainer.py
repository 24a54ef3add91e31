"""Dhow's default trainer for tabular data, on SageMaker's script-mode contract.

    python -m shared.trainer

It reads what SageMaker (or Dhow's local backend, which sets up the same
directories and variables) provides:

- ``SM_CHANNEL_TRAIN``: a folder with the curated Parquet file(s); a run that learns
  from several uploads also has ``SM_CHANNEL_TRAIN_1``, ``SM_CHANNEL_TRAIN_2``, ... (one
  channel each, oldest first), whose rows are unioned and deduplicated: by the
  ``dedupe_on`` columns (the spec's identifiers; the newest upload's row wins), else by
  the whole row;
- ``SM_HPS`` (or ``$SM_INPUT_CONFIG_DIR/hyperparameters.json``): hyperparameters,
  among them ``target`` and ``task``;
- ``SM_MODEL_DIR``: where the model goes (SageMaker tars it to model.tar.gz);
- ``SM_OUTPUT_DATA_DIR``: where ``metrics.json`` and the holdout rows go;
- ``SM_OUTPUT_DIR``: where a ``failure`` file explains a crash, as SageMaker expects;
- ``SM_NUM_GPUS``: more than 0 means XGBoost trains with ``device="cuda"``.

scikit-learn does the preprocessing (one-hot for categories), the split and the
metrics; XGBoost learns. The holdout is chosen by a hash of each row's
features and target, so the same rows are held out whichever version of the
dataset they appear in (and whatever their ids), and a new model and the
champion can be compared on the same rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

TRAINER_VERSION = "0.1.0"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.joblib"
HOLDOUT_EVERY = 5  # one row in five is held out


class TrainerError(Exception):
    """A problem with the inputs, said so that the job's failure reason is useful."""


def _env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name, default))


def read_hyperparameters() -> dict[str, Any]:
    """SageMaker passes hyperparameters as strings; JSON-looking ones are decoded."""
    raw = os.environ.get("SM_HPS")
    if raw:
        hps: dict[str, Any] = json.loads(raw)
    else:
        path = _env_path("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config") / "hyperparameters.json"
        hps = json.loads(path.read_text()) if path.exists() else {}
    out: dict[str, Any] = {}
    for key, value in hps.items():
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # a plain string stays a string
                value = json.loads(value)
        out[key] = value
    return out


def train_channels() -> list[Path]:
    """The train channel, then ``train_1``, ``train_2``, ... in order (SageMaker sets
    ``SM_CHANNEL_<NAME>`` for each channel; the local and Azure ML jobs do the same)."""
    channels = [_env_path("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train")]
    n = 1
    while f"SM_CHANNEL_TRAIN_{n}" in os.environ:
        channels.append(Path(os.environ[f"SM_CHANNEL_TRAIN_{n}"]))
        n += 1
    return channels


def _parquet_files(channel: Path) -> list[Path]:
    # A folder (SageMaker), or the file itself (an Azure ML uri_file input).
    if channel.is_file():
        return [channel]
    return sorted(p for p in channel.rglob("*") if p.suffix in (".parquet", ".pq"))


def union_of_uploads(frames: list[Any], dedupe_on: list[str]) -> tuple[Any, int]:
    """Several uploads as one frame, each row once, and how many were dropped as repeats.

    An upload that repeats earlier rows (a re-export, an overlapping window) must not
    weigh them twice. Rows are the same by the identifier columns when the spec has them
    (the later upload's version of a row wins: it is the correction), else by every column.
    """
    import pandas as pd

    data = pd.concat(frames, ignore_index=True)
    if len(frames) < 2:
        return data, 0
    subset = [c for c in dedupe_on if c in data.columns] or None
    out = data.drop_duplicates(subset=subset, keep="last").reset_index(drop=True)
    return out, len(data) - len(out)


def holdout_mask(frame: Any) -> Any:
    """Rows whose content hashes to 0 mod HOLDOUT_EVERY: stable across dataset versions."""
    import pandas as pd

    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return (hashes % HOLDOUT_EVERY) == 0


# Metrics where a smaller value is the better model (the gate compares the other way).
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})


def evaluate(model: Any, x: Any, y: Any, task: str, n_labels: int) -> dict[str, float]:
    """Holdout metrics; the same function scores a challenger and, later, the champion."""
    import numpy as np
    from sklearn import metrics as m

    out: dict[str, float] = {}
    if task == "classification":
        proba = model.predict_proba(x)
        pred = proba.argmax(axis=1)
        out["accuracy"] = float(m.accuracy_score(y, pred))
        if proba.shape[1] == 2:
            out["roc_auc"] = float(m.roc_auc_score(y, proba[:, 1]))
            out["f1"] = float(m.f1_score(y, pred))
        else:
            out["roc_auc"] = float(m.roc_auc_score(y, proba, multi_class="ovr"))
            out["f1"] = float(m.f1_score(y, pred, average="macro"))
        out["log_loss"] = float(m.log_loss(y, proba, labels=list(range(n_labels))))
    else:
        pred = model.predict(x)
        out["rmse"] = float(np.sqrt(m.mean_squared_error(y, pred)))
        out["mae"] = float(m.mean_absolute_error(y, pred))
        out["r2"] = float(m.r2_score(y, pred))
    return out


def score_on(model_dir: Path, holdout: Any) -> dict[str, float]:
    """Score the model saved in ``model_dir`` on ``holdout`` rows (which carry the target)."""
    import joblib

    card = json.loads((model_dir / "model.json").read_text())
    model = joblib.load(model_dir / MODEL_FILE)
    y = holdout[card["target"]]
    labels = card.get("labels")
    if labels:
        index = {label: i for i, label in enumerate(labels)}
        y = y.astype(str).map(index)
        keep = y.notna()  # a class the champion never saw cannot be scored by it
        holdout, y = holdout[keep], y[keep].astype(int)
    return evaluate(model, holdout[card["features"]], y, card["task"], len(labels or []))


def train(hps: dict[str, Any]) -> dict[str, Any]:
    import joblib
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import LabelEncoder, OneHotEncoder
    from xgboost import XGBClassifier, XGBRegressor

    frames = []
    for channel in train_channels():
        files = _parquet_files(channel)
        if not files:
            raise TrainerError(f"no Parquet files in the train channel {channel}")
        frames.append(pd.concat([pd.read_parquet(f) for f in files], ignore_index=True))
    dedupe_on = [c for c in str(hps.get("dedupe_on", "")).split(",") if c]
    data, repeated = union_of_uploads(frames, dedupe_on)
    target, task = hps.get("target"), hps.get("task", "classification")
    if target not in data.columns:
        raise TrainerError(f"target {target!r} is not a column: {', '.join(data.columns)}")
    if task not in ("classification", "regression"):
        raise TrainerError(f"task must be classification or regression, got {task!r}")

    drop = {c for c in str(hps.get("drop_columns", "")).split(",") if c}
    # A text column with a distinct value on every row is an identifier, not a feature.
    drop |= {c for c in data.columns if data[c].dtype == object and data[c].nunique() == len(data)}
    features = [c for c in data.columns if c != target and c not in drop]
    categorical = [c for c in features if data[c].dtype == object or data[c].dtype == bool]
    numeric = [c for c in features if c not in categorical]

    # Hashed on what the model sees (features and target), not on identifiers: a row
    # re-uploaded under a new id stays on its side of the split, so the champion is
    # never scored on rows it trained on.
    held = holdout_mask(data[[*features, target]])
    train_df, holdout_df = data[~held], data[held]
    if len(holdout_df) == 0 or len(train_df) == 0:
        raise TrainerError(f"{len(data)} rows are too few to hold out one in {HOLDOUT_EVERY}")

    gpus = int(os.environ.get("SM_NUM_GPUS", "0") or 0)
    device = "cuda" if gpus > 0 else "cpu"
    params = {
        "n_estimators": int(hps.get("n_estimators", 200)),
        "max_depth": int(hps.get("max_depth", 6)),
        "learning_rate": float(hps.get("learning_rate", 0.1)),
        "tree_method": "hist",
        "device": device,
        "random_state": int(hps.get("seed", 42)),
    }
    pre = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore"), categorical)],
        remainder="passthrough",
    )
    y_train, y_holdout = train_df[target], holdout_df[target]
    labels = None
    if task == "classification":
        encoder = LabelEncoder().fit(data[target])
        labels = [str(c) for c in encoder.classes_]
        y_train, y_holdout = encoder.transform(y_train), encoder.transform(y_holdout)
        learner: Any = XGBClassifier(**params)
    else:
        learner = XGBRegressor(**params)
    model = Pipeline([("preprocess", pre), ("learner", learner)])
    model.fit(train_df[features], y_train)

    result: dict[str, Any] = {"n_train": len(train_df), "n_holdout": len(holdout_df)}
    result |= evaluate(model, holdout_df[features], y_holdout, task, len(labels or []))

    model_dir = _env_path("SM_MODEL_DIR", "/opt/ml/model")
    out_dir = _env_path("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")
    model_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / MODEL_FILE)
    card = {
        "trainer_version": TRAINER_VERSION,
        "learner": f"xgboost-{type(learner).__name__}",
        "device": device,
        "target": target,
        "task": task,
        "features": features,
        "categorical": categorical,
        "numeric": numeric,
        "dropped": sorted(drop),
        "labels": labels,
        "hyperparameters": params,
        "uploads": len(frames),
        "repeated_rows_dropped": repeated,
    }
    (model_dir / "model.json").write_text(json.dumps(card, indent=2))
    metrics_text = json.dumps(result, indent=2)
    # In the model artifact, so register reads it with the model; in the output too.
    (model_dir / METRICS_FILE).write_text(metrics_text)
    (out_dir / METRICS_FILE).write_text(metrics_text)
    holdout_df.to_parquet(out_dir / "holdout.parquet", index=False)
    # Also inside the model artifact: register scores the champion on these same rows.
    holdout_df.to_parquet(model_dir / "holdout.parquet", index=False)
    for name, value in result.items():
        print(f"metric {name}={value}")  # for the job's MetricDefinitions regexes
    return result


def main() -> int:
    try:
        train(read_hyperparameters())
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        failure_dir = _env_path("SM_OUTPUT_DIR", "/opt/ml/output")
        with contextlib.suppress(OSError):
            failure_dir.mkdir(parents=True, exist_ok=True)
            # SageMaker shows this file's text as the job's FailureReason.
            (failure_dir / "failure").write_text(reason[:1024])
        if not isinstance(exc, TrainerError):
            traceback.print_exc()
        print(f"training failed: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
