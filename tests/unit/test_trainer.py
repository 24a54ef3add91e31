"""The default trainer, run as SageMaker runs it: a process with the SM_* contract."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from shared.specs import load_spec
from shared.trainer import holdout_mask
from shared.validation import validate_file

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "localstack/samples/customers.csv"


def sm_dirs(tmp: Path, data: pd.DataFrame | None, hps: dict[str, object]) -> dict[str, str]:
    train = tmp / "input/data/train"
    train.mkdir(parents=True)
    if data is not None:
        data.to_parquet(train / "data.parquet", index=False)
    return {
        "SM_CHANNEL_TRAIN": str(train),
        "SM_MODEL_DIR": str(tmp / "model"),
        "SM_OUTPUT_DATA_DIR": str(tmp / "output/data"),
        "SM_OUTPUT_DIR": str(tmp / "output"),
        "SM_NUM_GPUS": "0",
        # SageMaker hands hyperparameters over as strings.
        "SM_HPS": json.dumps({k: str(v) for k, v in hps.items()}),
    }


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.trainer"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("curated")
    run_ = validate_file(SAMPLE, "csv", load_spec("customers"), out_dir=out)
    assert run_.curated is not None
    return pd.read_parquet(run_.curated)


def test_classifier_on_curated_customers(tmp_path: Path, curated: pd.DataFrame) -> None:
    env = sm_dirs(
        tmp_path,
        curated,
        {"target": "churned", "task": "classification", "n_estimators": 50, "max_depth": 3},
    )
    r = run(env)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "output/data/metrics.json").read_text())
    assert metrics == json.loads((tmp_path / "model/metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_holdout"] == 400
    # The sample has a real signal (support calls, tenure, app): better than chance.
    assert metrics["roc_auc"] > 0.6
    assert 0 <= metrics["accuracy"] <= 1
    assert f"metric roc_auc={metrics['roc_auc']}" in r.stdout
    card = json.loads((tmp_path / "model/model.json").read_text())
    assert card["device"] == "cpu"
    assert card["dropped"] == ["customer_id"]  # an identifier is not a feature
    assert card["labels"] == ["0", "1"]
    model = joblib.load(tmp_path / "model/model.joblib")
    holdout = pd.read_parquet(tmp_path / "output/data/holdout.parquet")
    assert len(holdout) == metrics["n_holdout"]
    proba = model.predict_proba(holdout[card["features"]])
    assert proba.shape == (len(holdout), 2)


def test_regressor(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 600)
    data = pd.DataFrame(
        {"x": x, "zone": rng.choice(["a", "b"], 600), "y": 3 * x + rng.normal(0, 0.5, 600)}
    )
    r = run(sm_dirs(tmp_path, data, {"target": "y", "task": "regression"}))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "output/data/metrics.json").read_text())
    assert metrics["r2"] > 0.9
    assert metrics["rmse"] < 2


@pytest.mark.parametrize(
    ("hps", "data", "reason"),
    [
        ({"target": "nope", "task": "classification"}, True, "target 'nope' is not a column"),
        ({"target": "churned", "task": "ranking"}, True, "task must be"),
        ({"target": "churned"}, False, "no Parquet files"),
    ],
)
def test_failures_leave_a_reason_for_sagemaker(
    tmp_path: Path, curated: pd.DataFrame, hps: dict[str, object], data: bool, reason: str
) -> None:
    r = run(sm_dirs(tmp_path, curated if data else None, hps))
    assert r.returncode == 1
    assert reason in (tmp_path / "output/failure").read_text()
    assert "Traceback" not in r.stderr  # an input problem is explained, not dumped


def test_holdout_rows_stay_held_out_in_a_later_version(curated: pd.DataFrame) -> None:
    first = holdout_mask(curated)
    grown = pd.concat(
        [curated, curated.assign(customer_id=curated["customer_id"] + "b")], ignore_index=True
    )
    assert (holdout_mask(grown)[: len(curated)] == first).all()
    assert 0.1 < first.mean() < 0.3  # about one row in five


def test_scoring_a_saved_model_reproduces_its_holdout_metrics(
    tmp_path: Path, curated: pd.DataFrame
) -> None:
    from shared.trainer import score_on

    r = run(
        sm_dirs(
            tmp_path, curated, {"target": "churned", "task": "classification", "n_estimators": 30}
        )
    )
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "model/metrics.json").read_text())
    holdout = pd.read_parquet(tmp_path / "model/holdout.parquet")  # inside the artifact
    again = score_on(tmp_path / "model", holdout)
    for name in ("roc_auc", "accuracy", "f1", "log_loss"):
        assert again[name] == pytest.approx(metrics[name], abs=1e-12)


def test_the_train_channel_may_be_the_file_itself(tmp_path: Path, curated: pd.DataFrame) -> None:
    """Azure ML mounts a uri_file input as a file, not a folder."""
    env = sm_dirs(
        tmp_path, curated, {"target": "churned", "task": "classification", "n_estimators": 20}
    )
    env["SM_CHANNEL_TRAIN"] = str(Path(env["SM_CHANNEL_TRAIN"]) / "data.parquet")
    r = run(env)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "model/metrics.json").read_text())["n_train"] > 0


def test_the_trainer_imports_nothing_of_dhow() -> None:
    # The training job's code channel carries shared/trainer.py alone (the stack's
    # sourcedir.tar.gz): an import of another Dhow module would fail only in SageMaker.
    tree = ast.parse((ROOT / "shared/trainer.py").read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    ours = sorted(m for m in imported if m.split(".")[0] in ("shared", "functions", "dhow_local"))
    assert ours == []


def test_the_trainer_runs_as_the_xgboost_image_s_script_mode_runs_it(
    tmp_path: Path, curated: pd.DataFrame
) -> None:
    """The stack's archive, the launch request's hyperparameters, and the container's way
    of running them (sagemaker-containers 2.8.6, which the XGBoost image pins): the
    archive extracted into the code directory, each hyperparameter JSON-decoded, and
    ``python -m <sagemaker_program without .py>`` run there with the user hyperparameters
    as ``--name value`` arguments (sorted) and as SM_HPS."""
    from infra.aws.training import trainer_sourcedir
    from shared.adapters.sagemaker_training import script_mode_hyperparameters

    code = tmp_path / "opt/ml/code"
    code.mkdir(parents=True)
    with tarfile.open(trainer_sourcedir(tmp_path)) as archive:
        archive.extractall(code, filter="data")
    sent = script_mode_hyperparameters(
        {"target": "churned", "task": "classification", "n_estimators": "20"},
        job_name="dhow-prod-customers-1",
        region="me-central-1",
    )
    hps = {k: json.loads(v) for k, v in sent.items()}
    user = {k: v for k, v in hps.items() if not k.startswith("sagemaker_")}
    module = str(hps["sagemaker_program"]).removesuffix(".py")
    args = [arg for key in sorted(user) for arg in (f"--{key}", str(user[key]))]
    env = sm_dirs(tmp_path / "opt/ml", curated, {})
    env["SM_HPS"] = json.dumps(user)
    env["SM_USER_ENTRY_POINT"] = str(hps["sagemaker_program"])
    r = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=code,
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    model_dir = tmp_path / "opt/ml/model"
    assert (model_dir / "model.joblib").is_file()
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_holdout"] == 400
    card = json.loads((model_dir / "model.json").read_text())
    assert (card["target"], card["task"]) == ("churned", "classification")
    assert card["hyperparameters"]["n_estimators"] == 20


def test_several_uploads_are_unioned_each_row_once(tmp_path: Path, curated: pd.DataFrame) -> None:
    """A run on two uploads (channels train and train_1, as SageMaker names their
    variables: fact aws.sagemaker.training_channel_environment) learns from their union;
    the rows the second repeats count once, and a row whose id comes again takes the
    newer upload's values."""
    from shared.cloud_facts import value

    rule = value("aws.sagemaker.training_channel_environment")
    first, second = curated.iloc[:300], curated.iloc[200:].copy()
    corrected = second["customer_id"].iloc[0]  # in both uploads, edited in the second
    second.loc[second.index[0], "monthly_spend_aed"] = 9999.0
    env = sm_dirs(tmp_path, first, {"target": "churned", "dedupe_on": "customer_id"})
    later = tmp_path / "input/data/train_1"
    later.mkdir(parents=True)
    second.to_parquet(later / "data.parquet", index=False)
    env[f"{rule['prefix']}{'train_1'.upper()}"] = str(later)
    r = run(env)
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "model/model.json").read_text())
    metrics = json.loads((tmp_path / "model/metrics.json").read_text())
    assert (card["uploads"], card["repeated_rows_dropped"]) == (2, 100)
    assert metrics["n_train"] + metrics["n_holdout"] == len(curated)  # 400, not 500
    from shared.trainer import union_of_uploads

    data, _ = union_of_uploads([first, second], ["customer_id"])
    [row] = data[data["customer_id"] == corrected].to_dict("records")
    assert row["monthly_spend_aed"] == 9999.0


def test_without_identifiers_repeats_are_whole_rows(curated: pd.DataFrame) -> None:
    from shared.trainer import union_of_uploads

    rows = curated.drop(columns=["customer_id"])
    data, dropped = union_of_uploads([rows.iloc[:300], rows.iloc[250:]], [])
    assert (len(data), dropped) == (len(rows.drop_duplicates()), 300 + 150 - len(data))
    one, none = union_of_uploads([rows], ["customer_id"])
    assert (len(one), none) == (len(rows), 0)  # one upload is taken as it is
