"""The Function App's code package, and how the stack deploys it to Flex Consumption.

`make azure-package` builds ``layers/dist/azure-app/released-package.zip``: the zip a
Python v2 app runs as is, with ``function_app.py`` and ``host.json`` at its root, our
``functions/`` and ``shared/`` (with the spec and cloud-fact YAML), and the dependencies
vendored under ``.python_packages/lib/site-packages`` as Linux wheels for CPython 3.12
(azure.functions.python_package_layout). The same sources and pins give the same bytes,
so ``pulumi up`` uploads a new package only when something in it changed.

The stack then does what the Flex Consumption documentation says makes an app run a
package (azure.functions.flex_one_deploy, "Deployment sources" in
functions-infrastructure-as-code, Flex Consumption pivot): upload it as
``released-package.zip`` (azure.functions.flex_package_name) and ask One Deploy, the
site's ``extensions/onedeploy`` resource, to deploy it with remote build off. Uploading
to the deployment container alone deploys nothing, the same page says.

    python -m infra.azure.app_package [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_azure_native as az

from infra.code_bundle import code_files
from infra.config import REPO_ROOT, StackConfig, StackConfigError
from layers.build import LayerBuildError, pip_install, smoke_import, strip, tree_size
from shared import constants as c
from shared.cloud_facts import value

_LAYOUT = value("azure.functions.python_package_layout")
SITE_PACKAGES: str = _LAYOUT["site_packages"]
ROOT_FILES: tuple[str, ...] = tuple(_LAYOUT["root_files"])
PACKAGE_NAME: str = value("azure.functions.flex_package_name")
MAX_BYTES: int = value("azure.functions.zip_deploy_max_bytes")
DIST = REPO_ROOT / "layers" / "dist" / "azure-app"
PACKAGE_PATH = DIST / PACKAGE_NAME
# Flex Consumption runs on Linux x86_64 workers.
ARCH = "x86_64"
# What the app's functions import beyond the core dependencies: validate's and
# train-launch's Azure ML hand-off (azureml), register's and serve's models (train),
# drift_check's verdict and report (drift). One app hosts every function.
APP_EXTRAS = ("azureml", "train", "drift")
# Never in the package: only the app's own code and its vendored dependencies are.
_NEVER = frozenset({"__pycache__", ".venv", "tests", ".git"})
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Imports function_app and then every entry point it binds, as the host does on first use.
# A module missing from the package fails the check; a cold start that refuses its
# settings (a typed DhowError) is the settings contract's concern, not the package's.
IMPORT_CHECK = """
import importlib, sys, function_app
from shared.errors import DhowError
entries = {f.azure_handler.rpartition('.')[0] for f in function_app.TOPOLOGY.functions}
entries.add('functions.drift_check.azure_function')
missing = []
for name in sorted(entries):
    try:
        importlib.import_module(name)
    except ImportError as exc:
        missing.append(f'{name}: {exc!r}')
    except DhowError:
        pass
sys.exit('\\n'.join(missing) or None)
"""
# Each entry point builds its service at cold start: the settings the stack sets, with
# placeholder values (constructing the clients calls nothing).
_IMPORT_ENV = {
    c.CLOUD: "azure",
    c.STAGE: "smoke",
    c.AZURE_LOCATION: "uaenorth",
    c.AZURE_STORAGE_ACCOUNT: "dhowsmokedata",
    c.AZURE_EVENTGRID_ENDPOINT: "https://dhow-smoke.uaenorth-1.eventgrid.azure.net/api/events",
    c.TRAINING_BACKEND: "azureml",
    c.SERVING_BACKEND: "cloud",
    c.SERVE_DATASET: "customers",
    c.AZUREML_SUBSCRIPTION_ID: "00000000-0000-0000-0000-000000000000",
    c.AZUREML_RESOURCE_GROUP: "dhow-smoke-rg",
    c.AZUREML_WORKSPACE: "dhow-smoke-ml",
    c.AZUREML_COMPUTE: "cpu",
    c.AZUREML_GPU_COMPUTE: "gpu",
    c.AZUREML_ENVIRONMENT: "azureml:dhow-validate:1",
    c.AZUREML_TRAIN_ENVIRONMENT: "azureml:dhow-train:1",
    c.AZUREML_STAGING_DATASTORE: "staging",
    c.AZUREML_CURATED_DATASTORE: "curated",
    c.AZUREML_MODELS_DATASTORE: "models",
}


class AppPackageError(LayerBuildError):
    """The app package could not be built, does not import, or is over the size limit."""


@dataclass(frozen=True)
class PackageReport:
    path: str
    zipped: int
    unzipped: int
    sha256: str

    @property
    def fits(self) -> bool:
        return self.zipped <= MAX_BYTES


def app_requirements(root: Path = REPO_ROOT) -> list[str]:
    """The pinned requirements of the app: pyproject's dependencies and APP_EXTRAS."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in APP_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    return reqs


def app_entries(root: Path, deps: Path | None) -> dict[str, Path]:
    """``archive name -> file``: the root files, our code, and the vendored dependencies."""
    functions = root / "functions"
    entries = {name: functions / name for name in ROOT_FILES}
    for f in code_files(root):
        rel = f.relative_to(root).as_posix()
        if f.parent == functions and f.name in ROOT_FILES:
            continue  # at the root already
        entries[rel] = f
    if deps is not None:
        for f in deps.rglob("*"):
            if f.is_file() and not _NEVER & set(f.relative_to(deps).parts):
                entries[f"{SITE_PACKAGES}/{f.relative_to(deps).as_posix()}"] = f
    return {k: entries[k] for k in sorted(entries) if not _NEVER & set(k.split("/"))}


def build_zip(out: Path, root: Path = REPO_ROOT, deps: Path | None = None) -> Path:
    """Write the app package to ``out``: sorted entries, fixed timestamps and modes, so
    the same sources give the same bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, f in app_entries(root, deps).items():
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.external_attr = (0o755 if os.access(f, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, f.read_bytes())
    return out


def import_check(package: Path, extra_paths: list[Path] | None = None) -> str:
    """Unzip ``package`` and import function_app and each entry point from it alone (plus
    ``extra_paths``); returns the error, or ""."""
    with tempfile.TemporaryDirectory(prefix="dhow-app-") as tmp:
        app = Path(tmp)
        with zipfile.ZipFile(package) as zf:
            zf.extractall(app)
        paths = [app, app / SITE_PACKAGES, *(extra_paths or [])]
        return smoke_import(IMPORT_CHECK, paths, _IMPORT_ENV)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(work: Path, pip: list[str], root: Path = REPO_ROOT) -> PackageReport:
    """`make azure-package`: vendor the dependencies, zip, import-check, measure."""
    deps = work / "site-packages"
    shutil.rmtree(deps, ignore_errors=True)
    try:
        pip_install(app_requirements(root), deps, ARCH, pip)
    except LayerBuildError as exc:
        raise AppPackageError(f"azure app: {exc}") from None
    # Nothing is provided by the Functions Python worker: keep boto3's neighbours too.
    strip(deps, runtime_provided={})
    out = build_zip(PACKAGE_PATH, root, deps)
    if os.uname().machine == ARCH:  # the wheels' native code loads only on x86_64
        error = import_check(out)
        if error:
            raise AppPackageError(f"function_app does not import from the package:\n{error}")
    return PackageReport(str(out), out.stat().st_size, tree_size(deps), sha256(out))


def package_path(cfg: StackConfig) -> Path:
    """Where ``make azure-package`` leaves the package for this stack's config (beside
    the AWS layers, in ``cfg.layers_dir``)."""
    return cfg.layers_dir / "azure-app" / PACKAGE_NAME


def require_package(path: Path = PACKAGE_PATH) -> Path:
    """The built package, or ``StackConfigError`` naming the make target that builds it
    (checked before anything is created, as the AWS stack checks its layers)."""
    if not path.exists():
        raise StackConfigError(
            f"{path} not built: run `make azure-package` first (it vendors the app's "
            "dependencies for Linux from PyPI, import-checks function_app and checks the "
            "size against the deployment limit)"
        )
    return path


def deploy(
    app: az.web.WebApp,
    group: az.resources.ResourceGroup,
    host: az.storage.StorageAccount,
    container: az.storage.BlobContainer,
    package: Path,
    opts: pulumi.ResourceOptions,
) -> az.resources.Resource:
    """Upload ``package`` to the app's deployment container and deploy it with One
    Deploy (azure.functions.flex_one_deploy). A new package (its digest) replaces the
    deployment, so each change of code is deployed once."""
    # __main__ refuses to run without the package; under the tests' mocks nothing reads it.
    digest = sha256(package) if package.exists() else ""
    blob = az.storage.Blob(
        "app-package-zip",
        blob_name=PACKAGE_NAME,
        account_name=host.name,
        container_name=container.name,
        resource_group_name=group.name,
        type="Block",
        content_type="application/zip",
        # The digest in the blob's metadata: a changed package is a changed blob.
        metadata={"dhow-sha256": digest},
        source=pulumi.FileAsset(str(package)),
        opts=opts,
    )
    one_deploy: dict[str, Any] = value("azure.functions.flex_one_deploy")
    return az.resources.Resource(
        "app-code",
        resource_provider_namespace=one_deploy["resource_provider_namespace"],
        parent_resource_path=app.name.apply(lambda n: f"sites/{n}"),
        resource_type=one_deploy["resource_type"],
        resource_name_=one_deploy["resource_name"],
        resource_group_name=group.name,
        api_version=one_deploy["api_version"],
        # The package is ready to run (dependencies vendored): no remote build.
        properties={"packageUri": blob.url, "remoteBuild": False},
        opts=pulumi.ResourceOptions.merge(
            opts,
            pulumi.ResourceOptions(
                depends_on=[blob],
                replacement_trigger=digest,
                # A deployment is an action, not a resource ARM can delete.
                retain_on_delete=True,
            ),
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make azure-package", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = build(REPO_ROOT / ".cache" / "azure-app", [sys.executable, "-m", "pip"])
    except AppPackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    mb = 2**20
    if args.json:
        print(json.dumps({**report.__dict__, "limit": MAX_BYTES, "fits": report.fits}))
    else:
        print(
            f"{report.path}: {report.zipped / mb:.1f} MB zipped "
            f"({report.zipped / MAX_BYTES:.0%} of {MAX_BYTES / mb:.0f} MB), "
            f"{report.unzipped / mb:.1f} MB of dependencies unzipped"
        )
    if not report.fits:
        print("error: over the zip deployment limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
