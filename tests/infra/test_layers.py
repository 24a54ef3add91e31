"""layers/: what each function ships with, and the inputs of the jobs image (Docker
cannot build here, so its inputs are what is tested)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from layers import build
from layers.catalogue import FUNCTION_LAYERS
from shared.topology import build_topology

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "layers" / "jobs.Dockerfile"


def test_every_zip_function_has_one_layer_and_images_have_none() -> None:
    topo = build_topology("x")
    assert set(FUNCTION_LAYERS) == {f.logical for f in topo.functions if f.package == "zip"}
    for layer in set(FUNCTION_LAYERS.values()):
        assert build.requirements(layer)  # every name pinned in pyproject.toml
        assert all("==" in r for r in build.requirements(layer))


def test_jobs_requirements_file_is_pyproject_s_pins() -> None:
    lines = (ROOT / "layers" / "jobs-requirements.txt").read_text().splitlines()
    assert [x for x in lines if x and not x.startswith("#")] == build.jobs_requirements()
    names = {re.split(r"[\[=]", x)[0] for x in build.jobs_requirements()}
    assert {"evidently", "scipy", "scikit-learn", "xgboost-cpu", "pandera", "pyarrow"} <= names


def test_dockerfile_copies_what_exists_and_runs_a_real_handler() -> None:
    text = DOCKERFILE.read_text()
    assert text.startswith("#")
    assert "FROM public.ecr.aws/lambda/python:3.12" in text
    for src in re.findall(r"^COPY (\S+) ", text, flags=re.M):
        assert (ROOT / src).exists(), src
    (cmd,) = re.findall(r'^CMD \["([^"]+)"\]', text, flags=re.M)
    module, _, attr = cmd.rpartition(".")
    assert (ROOT / (module.replace(".", "/") + ".py")).exists()
    assert attr == "handler"
    # Every image function's handler is in the image (its command overrides CMD).
    for fn in build_topology("x").functions:
        if fn.package == "image":
            assert (ROOT / (fn.aws_handler.rpartition(".")[0].replace(".", "/") + ".py")).exists()
    # SageMaker Processing runs `python -m shared.jobs.validate` in the same image.
    assert importlib.util.find_spec("shared.jobs.validate") is not None
    assert "ln -sf /var/lang/bin/python3 /usr/local/bin/python" in text


def test_strip_keeps_what_runs_and_drops_the_rest(tmp_path: Path) -> None:
    t = tmp_path / "python"
    files = {
        "pkg/__init__.py": "x",
        "pkg/tests/test_a.py": "x" * 100,
        "pkg/__pycache__/a.cpython-312.pyc": "x" * 50,
        "pkg/a.pyi": "x",
        "sklearn/externals/array_api_extra/testing.py": "x",  # imported at run time
        "pyarrow/libarrow_flight.so.2600": "x" * 1000,
        "pyarrow/libarrow.so.2600": "x",
        "six.py": "x" * 10,
        "six-1.17.0.dist-info/RECORD": "six.py,,\nsix-1.17.0.dist-info/RECORD,,\n",
    }
    for rel, body in files.items():
        (t / rel).parent.mkdir(parents=True, exist_ok=True)
        (t / rel).write_text(body)
    removed = build.strip(t)
    left = {p.relative_to(t).as_posix() for p in t.rglob("*") if p.is_file()}
    assert left == {
        "pkg/__init__.py",
        "sklearn/externals/array_api_extra/testing.py",
        "pyarrow/libarrow.so.2600",
    }
    assert removed >= 100 + 50 + 1 + 1000 + 10


def test_table_flags_a_function_over_250_mb() -> None:
    mb = 2**20
    text = build.table(
        [
            build.FunctionSize("ingest", "core", "x86_64", 10 * mb, 3 * mb),
            build.FunctionSize("serve", "serve", "x86_64", 200 * mb, 60 * mb),
            build.FunctionSize("fat", "x", "x86_64", 251 * mb, 60 * mb),
        ]
    )
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert rows["ingest"].endswith("  yes")
    assert rows["serve"].endswith("yes, from S3")
    assert rows["fat"].endswith("  NO")
    assert "the jobs image" in rows["drift_check"]


@pytest.mark.skipif(sys.platform != "linux", reason="the smoke import runs Linux wheels")
def test_core_layer_builds_from_the_registry_and_imports(tmp_path: Path) -> None:
    """A real build of the smallest layer: pip from the registry for Lambda's platform,
    stripped, then the ingest handler imported from it alone (plus boto3, as Lambda)."""
    target = build.install("core", "x86_64", tmp_path, [sys.executable, "-m", "pip"])
    build.strip(target)
    assert (target / "pydantic").is_dir()
    assert not list(target.rglob("__pycache__"))
    cores = list(target.glob("pydantic_core/_pydantic_core.cpython-312-x86_64-linux-gnu.so"))
    assert cores
    build.smoke("core", "ingest", target, tmp_path)
