"""bench/serving: the serve app's warm /predict latency and cold import, against a bare
FastAPI app that loads the same model.

- ours: ``shared.serve_app.create_app`` (spec-derived request checks, inference
  capture on, to an in-memory store), its model handed in already loaded, since the
  load and its hash check happen once per container, outside the warm path;
- bare: a FastAPI app with one ``POST /predict`` taking a list of dicts, the same
  joblib model, no checks, no capture.

Both are called in-process through the same ASGI test client, one after the other,
in the same run; the ratio is what to compare between runs. Cold import is the
time a fresh interpreter takes to import the Lambda handler module (which builds
the app) against importing FastAPI, pandas, joblib and the model's libraries and
building the bare app, each the median of three child processes.

    .venv/bin/python bench/serving/run.py [--requests 400]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "localstack")]

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from shared.capture import InferenceCapture  # noqa: E402
from shared.serve_app import create_app  # noqa: E402
from shared.serving import LoadedModel, ModelSlot  # noqa: E402
from shared.specs import load_spec  # noqa: E402
from shared.validation import validate_file  # noqa: E402
from tests.helpers import MemoryStore, train_artifact  # noqa: E402

BARE_APP = """
import joblib, pandas as pd
from fastapi import FastAPI
def bare_app(model_dir, features):
    model = joblib.load(f"{model_dir}/model.joblib")
    app = FastAPI()
    @app.post("/predict")
    def predict(rows: list[dict]):
        x = pd.DataFrame.from_records(rows)[features]
        return {"predictions": model.predict_proba(x).argmax(axis=1).tolist()}
    return app
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(client: TestClient, body: Any, n: int) -> list[float]:
    for _ in range(20):  # warm
        assert client.post("/predict", json=body).status_code == 200
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.post("/predict", json=body)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200
    return out


def cold(code: str, env: dict[str, str]) -> float:
    runs = []
    for _ in range(3):
        r = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        )
        runs.append(float(r.stdout.strip().splitlines()[-1]))
    return statistics.median(runs)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=400)
    args = p.parse_args()
    import joblib
    import pandas as pd

    spec = load_spec("customers")
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    run = validate_file(ROOT / "localstack/samples/customers.csv", "csv", spec, out_dir=tmp)
    assert run.curated is not None
    train_artifact(tmp / "m", run.curated, n_estimators=200, max_depth=1, learning_rate=0.05)
    model_dir = tmp / "m/model"
    card = json.loads((model_dir / "model.json").read_text())
    frame = pd.read_csv(ROOT / "localstack/samples/customers.csv").drop(columns=[spec.target])
    rows = json.loads(frame.to_json(orient="records"))

    from datetime import UTC, datetime

    from shared.ports import ModelVersion

    version = ModelVersion(
        dataset="customers",
        version=1,
        status="Approved",
        artifact="s3://bench/model.tar.gz",
        image="local",
        created_at=datetime.now(UTC),
    )
    loaded = LoadedModel(
        "customers", version, "0" * 64, card, joblib.load(model_dir / "model.joblib")
    )
    capture = InferenceCapture(MemoryStore(), "capture", "customers", batch_rows=500)
    ours = TestClient(create_app(spec, ModelSlot(lambda: loaded), capture))
    namespace: dict[str, Any] = {}
    exec(BARE_APP, namespace)  # noqa: S102 - the baseline's own source, shown above
    bare_app: FastAPI = namespace["bare_app"](str(model_dir), card["features"])
    bare = TestClient(bare_app)

    print(f"warm /predict, {args.requests} requests each, in-process ASGI client (ms)")
    print("| rows | ours p50 | ours p99 | bare p50 | bare p99 | p50 ours/bare | p99 ours/bare |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in (1, 100):
        body = rows[0] if n == 1 else rows[:n]
        o = timed(ours, body, args.requests)
        b = timed(bare, [rows[0]] if n == 1 else rows[:n], args.requests)
        o50, o99, b50, b99 = (
            percentile(o, 0.5),
            percentile(o, 0.99),
            percentile(b, 0.5),
            percentile(b, 0.99),
        )
        print(
            f"| {n} | {o50:.2f} | {o99:.2f} | {b50:.2f} | {b99:.2f} | "
            f"{o50 / b50:.2f} | {o99 / b99:.2f} |"
        )

    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'localstack'}",
        "DHOW_SERVE_DATASET": "customers",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "me-central-1",
    }
    ours_cold = cold(
        "import time; t=time.perf_counter(); import functions.serve.aws_lambda; "
        "import joblib, sklearn, xgboost; print(time.perf_counter()-t)",
        env,
    )
    bare_cold = cold(
        "import time; t=time.perf_counter()\n"
        + BARE_APP
        + "\nimport sklearn, xgboost\nFastAPI()\nprint(time.perf_counter()-t)",
        env,
    )
    print()
    print("| cold import | ours s | bare s | ours/bare |")
    print("|---|---:|---:|---:|")
    print(f"| serve handler | {ours_cold:.2f} | {bare_cold:.2f} | {ours_cold / bare_cold:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
