"""Each cloud is a kit, registered by name; nothing else decides by cloud.

What these hold: the registry picks the kit the settings name (a third one too), each
registered kit builds every port, the Azure kit refuses to run without its Event Grid
topic instead of falling back to the local one, and no code outside ``shared/clouds``
compares a ``.cloud``. (That ``shared/`` imports no ``dhow_local``, where the local kits
live, is tests/unit/test_layering.py's.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import dhow_local  # noqa: F401  (registers the local kits)
import pytest
from moto import mock_aws

from shared.adapters.aws import aws_client
from shared.clouds import KITS, CloudKit, Ports, kit_for, register_kit
from shared.clouds.aws import AwsKit
from shared.clouds.azure import AzureKit
from shared.errors import ConfigError
from shared.settings import Settings
from shared.topology import build_topology
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore

ROOT = Path(__file__).resolve().parents[2]
# Where a comparison on the cloud may be written: the kits' registry, nowhere else.
SCANNED = ("shared", "functions", "localstack/dhow_local", "localstack/dhow_cli")
ALLOWED = ROOT / "shared/clouds"
AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


def _sources(under: tuple[str, ...]) -> list[Path]:
    return sorted(p for d in under if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py"))


# What a comparison names the cloud by: ``x.cloud``, a bare ``cloud``, or a cloud's name.
CLOUD_NAMES = frozenset({"aws", "azure"})
# These compare a cloud a person gave as an option (`--cloud aws|azure|both`) with the
# clouds of the facts or of a report: they pick rows of data, not the running cloud's
# behaviour.
OPTION_FILTERS = frozenset({"localstack/dhow_cli/compliance.py", "localstack/dhow_cli/facts.py"})


def _names_the_cloud(node: ast.expr) -> bool:
    return (
        (isinstance(node, ast.Attribute) and node.attr == "cloud")
        or (isinstance(node, ast.Name) and node.id == "cloud")
        or (isinstance(node, ast.Constant) and node.value in CLOUD_NAMES)
    )


def _cloud_comparisons(source: str) -> list[int]:
    """The lines of ``source`` that branch on a cloud: an (in)equality with ``.cloud``, a
    bare ``cloud`` or a cloud's name, or a membership test against a written-out
    collection of them. A lookup in data keyed by cloud (``cloud in s.clouds``,
    ``KITS[name]``, ``self.cloud not in CLOUDS``) is no branch: the table is the registry."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = (node.left, *node.comparators)
        equality = any(isinstance(op, ast.Eq | ast.NotEq | ast.Is | ast.IsNot) for op in node.ops)
        written_out = [
            e
            for o in node.comparators
            if isinstance(o, ast.Tuple | ast.List | ast.Set)
            for e in o.elts
        ]
        if (equality and any(_names_the_cloud(o) for o in operands)) or (
            any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
            and any(_names_the_cloud(e) for e in (node.left, *written_out))
            and (written_out or isinstance(node.left, ast.Constant))
        ):
            lines.append(node.lineno)
    return lines


def test_no_code_outside_the_kits_compares_the_cloud() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _sources(SCANNED)
        if ALLOWED not in path.parents and str(path.relative_to(ROOT)) not in OPTION_FILTERS
        for line in _cloud_comparisons(path.read_text())
    ]
    assert not found, f"branches on the cloud outside shared/clouds: {found}"


def test_the_scan_sees_a_cloud_branch() -> None:
    """The walk above notices one, however it is written (so its silence means
    something); a cloud passed on as a value is no branch."""
    assert _cloud_comparisons('def f(s):\n    return s.cloud == "aws"\n') == [2]
    assert _cloud_comparisons('if "azure" != state.cloud:\n    pass\n') == [1]
    assert _cloud_comparisons("claim_window_s(topo, 'ingest', settings.cloud)\n") == []


def test_the_scan_sees_a_bare_cloud_and_a_cloud_s_name() -> None:
    """The branches the first scan missed: a ``cloud`` parameter, a cloud's name compared
    with anything, a written-out set of clouds; a lookup in a table keyed by cloud is
    still none."""
    assert _cloud_comparisons('if cloud == "aws":\n    pass\n') == [1]
    assert _cloud_comparisons('x = "aws" if kind == "aws" else "azure"\n') == [1]
    assert _cloud_comparisons('ok = name in ("aws", "azure")\n') == [1]
    assert _cloud_comparisons('ok = "azure" in names\n') == [1]
    assert _cloud_comparisons("ok = cloud in (None, f.cloud)\n") == [1]
    assert _cloud_comparisons("ok = cloud in setting.clouds\n") == []
    assert _cloud_comparisons("kit = LOCAL_KITS[state.cloud]\n") == []


def test_every_kit_says_who_the_caller_is() -> None:
    """``caller_principal`` is no port (the services never ask), so nothing abstract makes
    a kit define it: each registered kit must, or the CLI's audit trail has a hole."""
    for name, kit in KITS.items():
        assert kit.caller_principal is not CloudKit.caller_principal, name


def test_the_azure_kit_without_its_event_grid_topic_is_a_config_error() -> None:
    """Before, the bus silently became the local platform's Event Grid: in a stack
    without the endpoint, every event went to queues of the local topology."""
    settings = Settings(cloud="azure", azure_storage_connection_string=AZURITE)
    with pytest.raises(ConfigError) as info:
        kit_for(settings).bus(build_topology("local"))
    assert "DHOW_AZURE_EVENTGRID_ENDPOINT" in info.value.hint
    # Only the local kit plays Event Grid.
    local = Settings(cloud="azure", kit="local-azure", azure_storage_connection_string=AZURITE)
    assert type(kit_for(local).bus(build_topology("local"))).__name__ == "LocalEventGridBus"


def test_the_local_kits_register_with_dhow_local_and_are_the_clouds_own() -> None:
    assert KITS["aws"] is AwsKit
    assert KITS["azure"] is AzureKit
    assert issubclass(KITS["local-aws"], AwsKit)
    assert issubclass(KITS["local-azure"], AzureKit)
    assert kit_for(Settings()).training_backend == "sagemaker"
    assert kit_for(Settings(kit="local-aws")).training_backend == "local"


@pytest.fixture
def moto_queues(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto, with the events queue the AWS tap looks up as it is built."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        sqs = aws_client("sqs", Settings())
        sqs.create_queue(QueueName=build_topology("local").queue("events").name)
        yield


@pytest.mark.parametrize("name", sorted(KITS))
@pytest.mark.usefixtures("moto_queues")
def test_each_registered_kit_builds_every_port(name: str) -> None:
    """Every port method of ``CloudKit`` answers in every kit: a port, or the
    ConfigError that names the setting the stack would give it."""
    cloud = KITS[name].cloud
    kit = kit_for(
        Settings(
            kit=name,
            cloud=cloud,
            azure_storage_connection_string=AZURITE if cloud == "azure" else None,
        )
    )
    topo = build_topology("local")
    ports = Ports(store=MemoryStore(), bus=MemoryBus(), lineage=MemoryLineage())
    builds = {
        "store": kit.store,
        "lineage": lambda: kit.lineage(topo),
        "bus": lambda: kit.bus(topo),
        "event_tap": lambda: kit.event_tap(topo),
        "validation_jobs": kit.validation_jobs,
        "training_launcher": lambda: kit.training_launcher(ports, topo),
        "model_registry": lambda: kit.model_registry(ports),
        "deployer": lambda: kit.deployer(ports, topo),
        "drift_outputs": lambda: kit.drift_outputs(topo),
    }
    assert set(builds) == CloudKit.__abstractmethods__
    unhinted = []
    for port, build in builds.items():
        try:
            built = build()
        except ConfigError as exc:
            built = exc.hint or unhinted.append(port)
        assert built is not None or port == "validation_jobs", f"{name}.{port}"
    assert not unhinted, f"{name}: ConfigErrors without a hint from {unhinted}"


def test_a_kit_missing_a_port_cannot_be_built() -> None:
    class Half(CloudKit):
        cloud = "aws"
        training_backend = "sagemaker"

        def store(self) -> MemoryStore:
            return MemoryStore()

    with pytest.raises(TypeError, match="abstract"):
        Half(Settings())  # type: ignore[abstract]


def test_a_registered_third_kit_is_the_one_kit_for_picks() -> None:
    class ThirdKit(AwsKit):
        """A cloud added by one kit and one registration."""

    register_kit("third", ThirdKit)
    try:
        assert isinstance(kit_for(Settings(kit="third")), ThirdKit)
    finally:
        del KITS["third"]
    with pytest.raises(ConfigError) as info:
        kit_for(Settings(kit="third"))
    assert "DHOW_KIT" in info.value.hint
