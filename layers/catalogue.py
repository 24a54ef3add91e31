"""Which dependencies each function ships with, as Lambda layers or in the jobs image.

One layer per function shape: a function uses exactly one layer, so its size against
Lambda's limits is the layer plus our code, nothing hidden. Versions come from
``pyproject.toml``'s pins (one source of truth). boto3 and botocore are not shipped:
the Lambda Python runtime provides them, and botocore alone is ~80 MB unzipped.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Distribution names as pyproject.toml pins them.
_CORE = ("pydantic", "PyYAML")
_FRAME = ("pandas", "numpy")
_MODEL = ("scikit-learn", "xgboost-cpu", "joblib", "scipy")

LAYERS: dict[str, tuple[str, ...]] = {
    # ingest, train-launch, deploy: events, lineage and AWS calls only.
    "core": _CORE,
    # validate: chunked pandera validation, Parquet output.
    "validate": (*_CORE, *_FRAME, "pyarrow", "pandera"),
    # serve: FastAPI behind mangum, the model in memory.
    "serve": (*_CORE, *_FRAME, *_MODEL, "fastapi", "mangum"),
}

FUNCTION_LAYERS: dict[str, str] = {
    "ingest": "core",
    "validate": "validate",
    "train_launch": "core",
    "deploy": "core",
    "serve": "serve",
    # Container images (layers/jobs.Dockerfile): register scores models on Parquet
    # (pyarrow + scikit-learn + scipy + xgboost: 315 MB stripped), drift_check has
    # evidently (~1 GB).
}

# Provided by the Lambda runtime, never shipped in a layer: distribution -> the module
# it installs (the build removes the first, the smoke import borrows the second).
RUNTIME_PROVIDED = {
    "boto3": "boto3",
    "botocore": "botocore",
    "s3transfer": "s3transfer",
    "jmespath": "jmespath",
    "urllib3": "urllib3",
    "python-dateutil": "dateutil",
    "six": "six",
}

# Our code in every zip function and in the Azure app: the core package and the thin
# entry points. Here, with the layers, because both the layer build (its size report) and
# the Pulumi program (its archive) read it: layers/ never imports infra/.
CODE_GLOBS = (
    "shared/**/*.py",
    "shared/py.typed",
    "shared/specs/*.yaml",
    "shared/cloud_facts/*.yaml",
    "functions/**/*.py",
)


def code_files(root: Path = ROOT) -> list[Path]:
    """Every file of our code that a function's package carries, sorted, no caches."""
    files = {p for pattern in CODE_GLOBS for p in root.glob(pattern) if p.is_file()}
    return sorted(p for p in files if "__pycache__" not in p.parts)
