"""`make layers`: build each Lambda layer for Linux from the package registries and check
every zip-packaged function against Lambda's limits.

Wheels only (``--only-binary=:all:``) for the Lambda platform (``--platform``), so the
build never compiles and gives the same bytes on any machine. Tests, caches, type
stubs and docs are stripped. arm64 is built where every wheel exists for it.

    python -m layers.build [--arch x86_64 --arch arm64] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from layers.catalogue import FUNCTION_LAYERS, LAYERS, ROOT, RUNTIME_PROVIDED, code_files

DIST = ROOT / "layers" / "dist"
UNZIPPED_LIMIT = 250 * 1024**2  # the function, its layers, unzipped
# A direct upload's limit. The stack publishes every layer from its artifacts bucket,
# where only the unzipped limit applies; the column shows which would not upload directly.
ZIPPED_LIMIT = 50 * 1024**2
PLATFORMS = {
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64"),
    "arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64"),
}
PYTHON_VERSION = "3.12"
# uname's name for each architecture (Linux says aarch64 where Lambda says arm64).
_MACHINE = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
# What a running function never reads. Not "testing": numpy, pandas and scikit-learn
# import their own at run time (the smoke import caught it).
_STRIP_DIRS = frozenset({"tests", "test", "__pycache__", "docs", "examples", "benchmarks"})
_STRIP_SUFFIXES = (".pyc", ".pyi", ".pyx", ".pxd", ".c", ".cpp", ".h", ".md", ".rst")
# Parts of wheels no function loads: Arrow Flight and Arrow's own S3 filesystem (we
# read through boto3), ~50 MB of pyarrow. (libarrow_substrait stays: pyarrow.lib
# links it.) The smoke import proves nothing needed went.
_PRUNE = (
    "pyarrow/libarrow_flight.so*",
    "pyarrow/_flight.cpython-*",
    "pyarrow/libarrow_python_flight.so*",
    "pyarrow/libarrow_s3.so*",
    "pyarrow/_s3fs.cpython-*",
    "pyarrow/include",
    "pyarrow/src",
)


@dataclass(frozen=True)
class FunctionSize:
    function: str
    layer: str
    arch: str
    unzipped: int
    zipped: int

    @property
    def fits(self) -> bool:
        return self.unzipped <= UNZIPPED_LIMIT


class LayerBuildError(RuntimeError):
    """A layer could not be built (a wheel missing for the platform, the registry down)."""


def _project(root: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return project


def pins(root: Path = ROOT) -> dict[str, str]:
    """``name -> requirement`` for every exact pin in pyproject.toml (core and extras)."""
    project = _project(root)
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    out: dict[str, str] = {}
    for req in reqs:
        name = re.split(r"[\[=<>~!]", req, maxsplit=1)[0].strip()
        out.setdefault(_norm(name), req)
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(layer: str, root: Path = ROOT) -> list[str]:
    """The layer's pinned requirements, from pyproject.toml's pins."""
    table = pins(root)
    missing = [n for n in LAYERS[layer] if _norm(n) not in table]
    if missing:
        raise LayerBuildError(f"layer {layer}: {missing} not pinned in pyproject.toml")
    return [table[_norm(n)] for n in LAYERS[layer]]


def jobs_requirements(root: Path = ROOT) -> list[str]:
    """What layers/jobs.Dockerfile installs: the core dependencies, train and drift."""
    project = _project(root)
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *extras["train"], *extras["drift"]]


def strip(target: Path, runtime_provided: Mapping[str, str] = RUNTIME_PROVIDED) -> int:
    """Remove what a function never reads; returns the bytes removed. ``runtime_provided``
    is what the platform brings itself (Lambda's boto3; nothing on Azure Functions)."""
    removed = 0
    for path in sorted(target.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and path.name in _STRIP_DIRS:
            removed += tree_size(path)
            shutil.rmtree(path)
        elif path.is_file() and path.suffix in _STRIP_SUFFIXES:
            removed += path.stat().st_size
            path.unlink()
    for pattern in _PRUNE:
        for p in target.glob(pattern):
            removed += tree_size(p) if p.is_dir() else p.stat().st_size
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    # Pulled in as dependencies (pandas needs dateutil), provided by the Lambda runtime.
    for name in runtime_provided:
        for p in target.glob(f"{name.replace('-', '_')}-*.dist-info"):
            for line in (p / "RECORD").read_text().splitlines():
                f = target / line.split(",")[0]
                if f.is_file():
                    removed += f.stat().st_size
                    f.unlink()
    for d in sorted(target.rglob("*"), reverse=True):  # directories the removals emptied
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    return removed


def strip_symbols(target: Path) -> int:
    """``strip --strip-unneeded`` on every shared object (what serverless-python-
    requirements' ``strip`` option does): debug and local symbols only, the dynamic ones
    stay. Only for the host's own architecture, where the smoke import then proves the
    libraries still load; returns the bytes saved."""
    tool = shutil.which("strip")
    if tool is None:
        return 0
    saved = 0
    for so in sorted(target.rglob("*.so*")):
        # auditwheel's vendored libraries (numpy.libs/, scipy.libs/) are patched with
        # patchelf; stripping them breaks their load segments (the smoke import saw it).
        if not so.is_file() or so.parent.name.endswith(".libs"):
            continue
        before = so.stat().st_size
        subprocess.run([tool, "--strip-unneeded", str(so)], capture_output=True, check=False)
        saved += before - so.stat().st_size
    return saved


def tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def zip_tree(source: Path, zip_path: Path, prefix: str) -> int:
    """Zip ``source`` under ``prefix`` with fixed timestamps (same input, same bytes)."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for f in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(
                f"{prefix}{f.relative_to(source).as_posix()}", (1980, 1, 1, 0, 0, 0)
            )
            info.external_attr = (0o755 if os.access(f, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, f.read_bytes())
    return zip_path.stat().st_size


def install(layer: str, arch: str, work: Path, pip: list[str]) -> Path:
    """pip-install the layer's wheels for Lambda's Linux and Python into ``work``."""
    target = work / f"{layer}-{arch}" / "python"
    shutil.rmtree(target.parent, ignore_errors=True)
    try:
        pip_install(requirements(layer), target, arch, pip)
    except LayerBuildError as exc:
        raise LayerBuildError(f"{layer} ({arch}): {exc}") from None
    return target


def pip_install(reqs: list[str], target: Path, arch: str, pip: list[str]) -> None:
    """pip-install ``reqs`` as Linux wheels for CPython 3.12 on ``arch`` into ``target``
    (wheels only, so the same pins give the same files on any build machine)."""
    target.mkdir(parents=True, exist_ok=True)
    cmd = [
        *pip,
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--target",
        str(target),
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--only-binary=:all:",
    ]
    for platform in PLATFORMS[arch]:
        cmd += ["--platform", platform]
    cmd += reqs
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LayerBuildError(f"pip failed:\n{done.stderr.strip()[-2000:]}")


# What the function imports once warm, beyond its handler module.
_SMOKE = {
    "core": "import pydantic, yaml",
    "validate": (
        "import io, pandas as pd, pandera.pandas, pyarrow.parquet\n"
        "b = io.BytesIO(); pd.DataFrame({'a': [1, 2]}).to_parquet(b); b.seek(0)\n"
        "assert pd.read_parquet(b)['a'].tolist() == [1, 2]"
    ),
    "serve": "import fastapi, mangum, pandas, joblib, sklearn.pipeline, xgboost",
}


def smoke(layer: str, fn: str, target: Path, work: Path) -> None:
    """Import the function's handler and what it loads once warm, from the layer and our
    code only, plus the runtime's boto3 (symlinked from this environment): what Lambda's
    Python 3.12 on the build machine's architecture would do. Catches a stripped file
    that is needed after all."""
    runtime = work / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_PROVIDED.values():
        spec = importlib.util.find_spec(name)
        if spec and spec.origin:
            src = Path(spec.origin)
            src = src.parent if src.name == "__init__.py" else src
            link = runtime / src.name
            if not link.exists():
                link.symlink_to(src)
    handler = f"functions.{fn}.aws_lambda"
    code = f"import {handler}\n{_SMOKE[layer]}"
    env = {
        "DHOW_STAGE": "smoke",
        "AWS_REGION": "me-central-1",
        "AWS_DEFAULT_REGION": "me-central-1",
        "DHOW_SERVE_DATASET": "customers",
        "DHOW_TRAINING_IMAGE_URI": "x",
        "DHOW_SAGEMAKER_ROLE_ARN": "arn:aws:iam::1:role/x",
        "DHOW_KMS_KEY_ID": "k",
        "DHOW_PRIVATE_SUBNETS": "s",
        "PATH": os.environ.get("PATH", ""),
    }
    error = smoke_import(code, [target, ROOT, runtime], env)
    if error:
        raise LayerBuildError(f"{layer}: {handler} does not import from the layer:\n{error}")


def smoke_import(code: str, paths: list[Path], env: Mapping[str, str]) -> str:
    """Run ``code`` in this Python with only ``paths`` importable (``-S``: no site-packages,
    no .pth files, so nothing of this environment leaks in); returns the error, or ""."""
    full = {**env, "PYTHONPATH": os.pathsep.join(map(str, paths))}
    full.setdefault("PATH", os.environ.get("PATH", ""))
    done = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env=full,
        cwd=paths[0],
        capture_output=True,
        text=True,
        check=False,
    )
    return "" if done.returncode == 0 else done.stderr[-2000:]


def code_size(root: Path = ROOT) -> tuple[int, int]:
    """Our code in every zip function (the Pulumi program's archive), unzipped and zipped."""
    files = code_files(root)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f.relative_to(root).as_posix())
    return sum(f.stat().st_size for f in files), len(buffer.getvalue())


def build(
    arches: list[str], work: Path, pip: list[str], out: TextIO = sys.stderr
) -> list[FunctionSize]:
    DIST.mkdir(parents=True, exist_ok=True)
    layer_sizes: dict[tuple[str, str], tuple[int, int]] = {}
    for arch in arches:
        for layer in sorted(set(FUNCTION_LAYERS.values())):
            print(f"building {layer} ({arch}) ...", file=out, flush=True)
            try:
                target = install(layer, arch, work, pip)
            except LayerBuildError as exc:
                if arch == "x86_64":
                    raise
                print(f"  skipped: {str(exc).splitlines()[-1]}", file=out)
                continue
            removed = strip(target)
            # Symbols can be stripped, and the layer imported, only on its own architecture.
            if _MACHINE.get(os.uname().machine) == arch:
                removed += strip_symbols(target)
                for fn in sorted(f for f, lay in FUNCTION_LAYERS.items() if lay == layer):
                    smoke(layer, fn, target, work)
            zipped = zip_tree(target, DIST / f"{layer}-{arch}.zip", "python/")
            unzipped = tree_size(target)
            layer_sizes[(layer, arch)] = (unzipped, zipped)
            mb = 2**20
            print(f"  {unzipped / mb:.1f} MB unzipped ({removed / mb:.1f} MB stripped)", file=out)
    code_unzipped, code_zipped = code_size()
    sizes = []
    for arch in arches:
        for fn, layer in FUNCTION_LAYERS.items():
            if (layer, arch) not in layer_sizes:
                continue
            unzipped, zipped = layer_sizes[(layer, arch)]
            sizes.append(
                FunctionSize(fn, layer, arch, unzipped + code_unzipped, zipped + code_zipped)
            )
    (ROOT / "layers" / "jobs-requirements.txt").write_text(
        "# Generated from pyproject.toml (dependencies, train, drift) by `make layers`.\n"
        + "\n".join(jobs_requirements())
        + "\n"
    )
    return sizes


def table(sizes: list[FunctionSize]) -> str:
    mb = 2**20
    head = ("function", "arch", "layer", "unzipped MB", "/ 250", "zipped MB", "/ 50", "fits")
    rows = ["{:<14}{:<8}{:<10}{:>12}{:>7}{:>11}{:>6}  {}".format(*head)]
    for s in sizes:
        rows.append(
            "{:<14}{:<8}{:<10}{:>12.1f}{:>7.0%}{:>11.1f}{:>6.0%}  {}".format(
                s.function,
                s.arch,
                s.layer,
                s.unzipped / mb,
                s.unzipped / UNZIPPED_LIMIT,
                s.zipped / mb,
                s.zipped / ZIPPED_LIMIT,
                ("yes" if s.zipped <= ZIPPED_LIMIT else "yes, from S3") if s.fits else "NO",
            )
        )
    for fn in ("register", "drift_check"):
        rows.append(f"{fn:<14}{'x86_64':<8}{'(image)':<10} the jobs image, layers/jobs.Dockerfile")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make layers", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--arch", action="append", choices=sorted(PLATFORMS), help="default: both")
    parser.add_argument("--json", action="store_true", help="print the size table as JSON")
    args = parser.parse_args(argv)
    arches = args.arch or ["x86_64", "arm64"]
    try:
        sizes = build(arches, ROOT / ".cache" / "layers", [sys.executable, "-m", "pip"])
    except LayerBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{**asdict(s), "fits": s.fits} for s in sizes], indent=2))
    else:
        print(table(sizes))
    over = [f"{s.function} ({s.arch})" for s in sizes if not s.fits]
    if over:
        print(f"error: over Lambda's limits: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
