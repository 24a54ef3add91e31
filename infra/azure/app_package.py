"""The Function App's code package, and how the stack deploys it to Flex Consumption.

`make azure-package` builds ``layers/dist/azure-app/released-package.zip``: the zip a
Python v2 app runs as is, with ``function_app.py`` and ``host.json`` at its root, our
``functions/`` and ``shared/`` (with the spec and cloud-fact YAML), and the dependencies
vendored under ``.python_packages/lib/site-packages`` as Linux wheels for CPython 3.12
(azure.functions.python_package_layout). The same sources and pins give the same bytes,
so ``pulumi up`` uploads a new package only when something in it changed.

The stack then publishes it as ``az functionapp deployment source config-zip`` does for
Flex Consumption: a POST of the zip to One Deploy's ``/api/publish?RemoteBuild=false`` on
the app's SCM site with the Entra token of whoever runs `pulumi up`
(azure.functions.flex_publish_endpoint), from a dynamic resource keyed by the package's
digest. The platform writes the deployment container itself (azure.functions.flex_one_deploy).

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

from infra.config import REPO_ROOT, StackConfig, StackConfigError
from layers.build import LayerBuildError, pip_install, smoke_import, strip, tree_size
from layers.catalogue import code_files
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


@dataclass(frozen=True)
class PublishRequest:
    """One POST of the package to One Deploy's publish endpoint on the app's SCM site."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


def publish_request(scm_host: str, package: bytes, token: str) -> PublishRequest:
    """What ``az functionapp deployment source config-zip`` sends a Flex Consumption app
    (fact azure.functions.flex_publish_endpoint), with remote build off: the package's
    dependencies are vendored (azure.functions.python_package_layout)."""
    rule = value("azure.functions.flex_publish_endpoint")
    query = "&".join(f"{k}={v}" for k, v in rule["query"].items())
    return PublishRequest(
        method=rule["method"],
        url=f"https://{scm_host}{rule['path']}?{query}",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": rule["content_type"],
            "Cache-Control": "no-cache",
        },
        body=package,
    )


class PublishError(Exception):
    """One Deploy did not accept the package (the status and body say why)."""


def _send(request: PublishRequest) -> tuple[int, str]:
    """POST ``request`` over HTTPS; ``(status, body)``, HTTP errors included."""
    import urllib.error
    import urllib.request

    if not request.url.startswith("https://"):
        raise PublishError(f"not an https URL: {request.url}")
    req = urllib.request.Request(  # noqa: S310 (https only, checked above)
        request.url, data=request.body, headers=request.headers, method=request.method
    )
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:  # noqa: S310 (https only)
            return int(resp.status), resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode("utf-8", "replace")


def _token(scope: str) -> str:
    """The Entra token of whoever runs `pulumi up` (az login, a service principal's
    environment, a workload identity), as the CLI uses its own."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential().get_token(scope).token


class AppCodeProvider(pulumi.dynamic.ResourceProvider):
    """The app's code, published to One Deploy from the package on this machine.

    Keyed by the package's digest: a changed digest is an update (a new POST), never a
    replacement, so there is no create of a resource that still exists; delete does
    nothing, as a deployment is an action, not something to remove (the platform keeps
    the last package in the deployment container). The token and the HTTP call are
    arguments so a test can see the exact request."""

    def __init__(
        self,
        send: Any = None,
        token: Any = None,
    ) -> None:
        self._send = send
        self._token = token

    def _publish(self, props: dict[str, Any]) -> None:
        rule = value("azure.functions.flex_publish_endpoint")
        path = Path(str(props["package"]))
        if sha256(path) != props["sha256"]:
            raise PublishError(
                f"{path} changed since the preview: run `make azure-package` and `pulumi up` again"
            )
        token = (self._token or _token)(rule["token_scope"])
        request = publish_request(str(props["scm_host"]), path.read_bytes(), token)
        status, body = (self._send or _send)(request)
        if status == rule["in_progress"]:
            raise PublishError(
                f"{props['app']}: another deployment is under way (409); run `pulumi up` again "
                "once it has finished"
            )
        if status not in rule["accepted"]:
            raise PublishError(f"{props['app']}: One Deploy answered {status}: {body[:500]}")

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        self._publish(props)
        return pulumi.dynamic.CreateResult(id_=f"{props['app']}-code", outs=props)

    def diff(
        self, _id: str, olds: dict[str, Any], news: dict[str, Any]
    ) -> pulumi.dynamic.DiffResult:
        changed = [k for k in ("sha256", "scm_host") if olds.get(k) != news.get(k)]
        return pulumi.dynamic.DiffResult(
            changes=bool(changed), replaces=[], delete_before_replace=False
        )

    def update(
        self, _id: str, _olds: dict[str, Any], news: dict[str, Any]
    ) -> pulumi.dynamic.UpdateResult:
        self._publish(news)
        return pulumi.dynamic.UpdateResult(outs=news)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class AppCode(pulumi.dynamic.Resource):
    """The package deployed to the app: its digest, the SCM host it was published to."""

    sha256: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        props: dict[str, Any],
        opts: pulumi.ResourceOptions,
        provider: AppCodeProvider | None = None,
    ) -> None:
        super().__init__(provider or AppCodeProvider(), name, props, opts)


def scm_host(app: az.web.WebApp) -> pulumi.Output[str]:
    """The app's SCM (Kudu) host name: the enabled host name with ``.scm.`` (a Flex app's
    default host name may carry a hash and a region, so it is read, not built)."""
    names: pulumi.Output[Any] = app.enabled_host_names
    return names.apply(lambda hosts: next((str(n) for n in hosts or [] if ".scm." in n), ""))


def deploy(app: az.web.WebApp, package: Path, opts: pulumi.ResourceOptions) -> AppCode:
    """Publish ``package`` to the app with One Deploy's endpoint, with the Entra token of
    whoever runs `pulumi up` (azure.functions.flex_publish_endpoint; they need
    Microsoft.Web/sites/publish/Action on the app, azure.functions.scm_publish_action).
    The platform writes the deployment container itself, with the app's identity, so the
    stack neither uploads a blob there nor hands One Deploy a URL it cannot fetch."""
    # __main__ refuses to run without the package; under the tests' mocks nothing reads it.
    digest = sha256(package) if package.exists() else ""
    return AppCode(
        "app-code-publish",
        {"app": app.name, "scm_host": scm_host(app), "package": str(package), "sha256": digest},
        opts,
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
