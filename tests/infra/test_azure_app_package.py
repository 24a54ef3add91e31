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


DYNAMIC = "pulumi-python:dynamic:Resource"


def test_the_stack_publishes_the_package_by_its_digest_and_writes_no_blob_itself(
    azure_program: Program,
) -> None:
    """Before: the stack uploaded released-package.zip into the container the platform
    owns (each overwrote the other's, and `pulumi destroy` deleted the live package) and
    handed One Deploy a private blob URL, which no document says it can fetch; a changed
    package replaced ``extensions/onedeploy``, a create of an id that still exists."""
    (app,) = azure_program.of_type("azure-native:web:WebApp")
    (code,) = [r for r in azure_program.of_type(DYNAMIC) if r.name == "app-code-publish"]
    assert code.inputs["app"] == app.inputs["name"]
    package = Path(code.inputs["package"])
    assert package.name == value("azure.functions.flex_package_name")
    assert code.inputs["sha256"] == (app_package.sha256(package) if package.exists() else "")
    assert not azure_program.of_type("azure-native:storage:Blob")
    assert not [
        r
        for r in azure_program.of_type("azure-native:resources:Resource")
        if r.inputs.get("resourceName") == "onedeploy"
    ]
    rule = value("azure.functions.flex_one_deploy")
    assert rule["direct_upload_deploys"] is False


def _props(package: Path, **kw: str) -> dict[str, str]:
    return {
        "app": "dhow-uae-prod-functions",
        "scm_host": "dhow-uae-prod-functions-abc.scm.uaenorth-01.azurewebsites.net",
        "package": str(package),
        "sha256": app_package.sha256(package),
        **kw,
    }


def test_the_publish_is_the_request_az_sends_a_flex_app_with_remote_build_off(
    package: Path,
) -> None:
    rule = value("azure.functions.flex_publish_endpoint")
    sent: list[app_package.PublishRequest] = []
    scopes: list[str] = []

    def send(request: app_package.PublishRequest) -> tuple[int, str]:
        sent.append(request)
        return 202, ""

    def token(scope: str) -> str:
        scopes.append(scope)
        return "entra-token"

    provider = app_package.AppCodeProvider(send=send, token=token)
    result = provider.create(_props(package))
    assert result.id == "dhow-uae-prod-functions-code"
    (request,) = sent
    assert request.method == rule["method"] == "POST"
    assert request.url == (
        "https://dhow-uae-prod-functions-abc.scm.uaenorth-01.azurewebsites.net"
        "/api/publish?RemoteBuild=false"
    )
    assert request.headers["Authorization"] == "Bearer entra-token"
    assert request.headers["Content-Type"] == rule["content_type"] == "application/zip"
    assert request.body == package.read_bytes()
    assert scopes == [rule["token_scope"]]
    assert value("azure.functions.scm_publish_action")["action"] == (
        "Microsoft.Web/sites/publish/Action"
    )


def test_a_changed_package_is_an_update_never_a_replace_and_delete_does_nothing(
    package: Path, tmp_path: Path
) -> None:
    sent: list[app_package.PublishRequest] = []
    provider = app_package.AppCodeProvider(
        send=lambda r: (sent.append(r), (202, ""))[1], token=lambda _s: "t"
    )
    old = _props(package)
    assert not provider.diff("id", old, dict(old)).changes
    other = tmp_path / "other" / "released-package.zip"
    other.parent.mkdir()
    other.write_bytes(package.read_bytes() + b"changed")
    new = _props(other)
    diff = provider.diff("id", old, new)
    assert diff.changes
    assert not diff.replaces
    provider.update("id", old, new)
    assert [r.body for r in sent] == [other.read_bytes()]
    provider.delete("id", new)
    assert len(sent) == 1


@pytest.mark.parametrize(("status", "match"), [(409, "under way"), (401, "answered 401")])
def test_a_publish_one_deploy_refuses_fails_the_update_saying_why(
    package: Path, status: int, match: str
) -> None:
    provider = app_package.AppCodeProvider(send=lambda _r: (status, "no"), token=lambda _s: "t")
    with pytest.raises(app_package.PublishError, match=match):
        provider.create(_props(package))


def test_a_package_rebuilt_since_the_preview_is_not_published(package: Path) -> None:
    sent: list[object] = []
    provider = app_package.AppCodeProvider(
        send=lambda r: (sent.append(r), (202, ""))[1], token=lambda _s: "t"
    )
    with pytest.raises(app_package.PublishError, match="make azure-package"):
        provider.create(_props(package, sha256="0" * 64))
    assert sent == []
