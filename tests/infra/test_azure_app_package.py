"""The Function App's package (infra/azure/app_package.py) and its deployment by the stack:
what Flex Consumption runs after `pulumi up`, checked against the documented rules."""

from __future__ import annotations

import sysconfig
import zipfile
from pathlib import Path

import pytest

from infra.azure import app_package
from infra.config import StackConfigError
from shared.cloud_facts import value
from tests.infra.harness import Program

SITE = value("azure.functions.python_package_layout")["site_packages"]


@pytest.fixture
def deps(tmp_path: Path) -> Path:
    """A stand-in for the vendored wheels: one module, plus what the build never ships."""
    d = tmp_path / "site-packages"
    (d / "vendored_marker").mkdir(parents=True)
    (d / "vendored_marker" / "__init__.py").write_text("VENDORED = True\n")
    (d / "vendored_marker" / "__pycache__").mkdir()
    (d / "vendored_marker" / "__pycache__" / "x.cpython-312.pyc").write_bytes(b"\0")
    (d / "vendored_marker" / "tests").mkdir()
    (d / "vendored_marker" / "tests" / "test_x.py").write_text("")
    return d


@pytest.fixture
def package(tmp_path: Path, deps: Path) -> Path:
    return app_package.build_zip(tmp_path / "a" / "released-package.zip", deps=deps)


def _names(package: Path) -> list[str]:
    with zipfile.ZipFile(package) as zf:
        return zf.namelist()


def test_function_app_and_host_json_at_the_root_deps_where_the_worker_reads_them(
    package: Path,
) -> None:
    names = _names(package)
    layout = value("azure.functions.python_package_layout")
    for root_file in layout["root_files"]:
        assert root_file in names
    assert f"{layout['site_packages']}/vendored_marker/__init__.py" in names
    assert "shared/specs/customers.yaml" in names or any(
        n.startswith("shared/specs/") and n.endswith(".yaml") for n in names
    )
    assert any(n.startswith("shared/cloud_facts/") and n.endswith(".yaml") for n in names)


def test_every_module_function_app_binds_imports_from_the_package(package: Path) -> None:
    # Our code comes from the unzipped package only (-S: no .pth, so not from the repo);
    # third-party wheels from this venv stand in for the vendored ones, which
    # `make azure-package` import-checks alone.
    error = app_package.import_check(package, [Path(sysconfig.get_paths()["purelib"])])
    assert error == ""


def test_the_import_check_fails_when_a_module_is_missing(tmp_path: Path, package: Path) -> None:
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            if item.filename != "functions/ingest/core.py":
                dst.writestr(item, src.read(item))
    error = app_package.import_check(broken, [Path(sysconfig.get_paths()["purelib"])])
    assert "functions.ingest.core" in error


def test_same_sources_same_bytes(tmp_path: Path, deps: Path, package: Path) -> None:
    again = app_package.build_zip(tmp_path / "b" / "released-package.zip", deps=deps)
    assert again.read_bytes() == package.read_bytes()


def test_no_venv_tests_caches_or_git_in_the_package(package: Path) -> None:
    for name in _names(package):
        parts = set(name.split("/"))
        assert not parts & {".venv", "tests", "__pycache__", ".git"}, name
        assert not name.endswith(".pyc"), name


def test_the_package_is_held_to_the_zip_deployment_limit(package: Path) -> None:
    limit = value("azure.functions.zip_deploy_max_bytes")
    assert limit == app_package.MAX_BYTES
    assert package.stat().st_size <= limit
    over = app_package.PackageReport("p", limit + 1, 0, "")
    assert not over.fits
    built = app_package.PACKAGE_PATH
    if built.exists():  # what `make azure-package` built, when it has run here
        assert built.stat().st_size <= limit


def test_the_program_refuses_without_the_package_naming_the_make_target(tmp_path: Path) -> None:
    with pytest.raises(StackConfigError, match=r"make azure-package"):
        app_package.require_package(tmp_path / "released-package.zip")


def test_the_stack_uploads_the_package_to_the_apps_deployment_container(
    azure_program: Program,
) -> None:
    (app,) = azure_program.of_type("azure-native:web:WebApp")
    storage = app.inputs["functionAppConfig"]["deployment"]["storage"]
    container = storage["value"].rstrip("/").rsplit("/", 1)[-1]
    blobs = azure_program.of_type("azure-native:storage:Blob")
    (blob,) = [
        b for b in blobs if b.inputs["blobName"] == value("azure.functions.flex_package_name")
    ]
    assert blob.inputs["containerName"] == container
    (host,) = [
        a
        for a in azure_program.of_type("azure-native:storage:StorageAccount")
        if storage["value"].startswith(f"https://{a.inputs['accountName']}.blob.")
    ]
    assert blob.inputs["accountName"] == host.inputs["accountName"]


def test_the_stack_deploys_the_package_with_one_deploy(azure_program: Program) -> None:
    one_deploy = value("azure.functions.flex_one_deploy")
    (app,) = azure_program.of_type("azure-native:web:WebApp")
    (deployment,) = [
        r
        for r in azure_program.of_type("azure-native:resources:Resource")
        if r.inputs.get("resourceName") == one_deploy["resource_name"]
    ]
    assert (
        deployment.inputs["resourceProviderNamespace"] == one_deploy["resource_provider_namespace"]
    )
    assert deployment.inputs["resourceType"] == one_deploy["resource_type"]
    assert deployment.inputs["parentResourcePath"] == f"sites/{app.inputs['name']}"
    assert deployment.inputs["apiVersion"] == one_deploy["api_version"]
    # Dependencies are vendored: the package runs as is.
    assert deployment.inputs["properties"]["remoteBuild"] is False
