"""One set of reason codes (shared.reasons.Reason): each with its category and its hint,
written nowhere else, and the category deciding retry or answer."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from dhow_cli.app import EXIT_CONFIG, EXIT_PLATFORM, exit_code

import shared
from shared.errors import (
    ConfigError,
    DhowError,
    PlatformError,
    RegionNotAllowed,
    WorkInProgress,
)
from shared.events import ObjectRef, TrainingCompleted
from shared.reasons import Reason, ReasonCategory, category_of, is_retried
from shared.services.ingest import IngestService
from shared.services.train_launch import TrainLaunchService
from shared.topology import DATASETS_PREFIX
from shared.triggers import ObjectCreated
from shared.validation import MAX_COLUMNS, MAX_HEADER_BYTES
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore
from tests.unit.test_train_launch_service import EVENT, Recording

ROOT = Path(__file__).resolve().parents[2]
# Where the code that records, publishes or prints a reason lives.
SOURCES = ("shared", "functions", "localstack/dhow_local", "localstack/dhow_cli", "infra", "layers")
CODE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def test_every_reason_has_a_category_and_a_hint() -> None:
    for member in Reason:
        assert isinstance(member.category, ReasonCategory), member
        assert member.hint.strip(), f"{member.value} has no hint"
        assert CODE.match(member.value), f"{member.value} is not a snake_case code"
    # No two members share a value (an Enum would quietly make the second an alias).
    assert len(Reason.__members__) == len({m.value for m in Reason})


def test_values_are_the_strings_stored_and_printed() -> None:
    assert Reason.SCHEMA_CHECKS_FAILED == "schema_checks_failed"
    assert f"[{Reason.KEY_OUTSIDE_PREFIX}]" == "[key_outside_prefix]"
    assert DhowError("x", reason=Reason.NO_ROWS).as_dict()["reason"] == "no_rows"


def test_hints_name_the_limits_the_code_enforces() -> None:
    # The hints are literal (shared.reasons imports nothing of Dhow's, so the errors can
    # import it); these hold them to the constants they quote.
    assert f"upload under {DATASETS_PREFIX}<dataset>/<file>" in Reason.KEY_OUTSIDE_PREFIX.hint
    hint = Reason.TOO_MANY_COLUMNS.hint
    assert f"at most {MAX_COLUMNS:,} columns" in hint
    assert f"at most {MAX_HEADER_BYTES // 1024} KiB" in hint


def _python_files() -> Iterator[Path]:
    for top in SOURCES:
        if (ROOT / top).is_dir():
            yield from (p for p in (ROOT / top).rglob("*.py") if p.name != "reasons.py")


def _reason_positions(tree: ast.AST) -> dict[str, int]:
    """The callables a module defines that take a ``reason`` positionally: name to index
    (a class by its ``__init__``, without ``self``)."""
    out: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            init = next(
                (f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"),
                None,
            )
            names = [a.arg for a in init.args.args[1:]] if init else []
            if "reason" in names:
                out[node.name] = names.index("reason")
        elif isinstance(node, ast.FunctionDef):
            names = [a.arg for a in node.args.args if a.arg not in ("self", "cls")]
            if "reason" in names:
                out[node.name] = names.index("reason")
    return out


def _is_reason(target: ast.expr) -> bool:
    return (isinstance(target, ast.Name) and target.id == "reason") or (
        isinstance(target, ast.Attribute) and target.attr == "reason"
    )


def _literal_reasons(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Reason codes written as string literals: ``reason="..."`` arguments, a reason passed
    positionally to a callable of the module that takes one, ``reason = "..."`` and
    ``x.reason, ... = "...", ...`` assignments (class attributes included), ``{"reason":
    "..."}`` entries and what a function named for a reason returns. Free text with a
    space (a person's why, a sentence) is not a code."""

    def code(node: ast.expr | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value if CODE.match(node.value) else None
        return None

    positions = _reason_positions(tree)
    for node in ast.walk(tree):
        found: list[tuple[int, str | None]] = []
        if isinstance(node, ast.keyword) and node.arg == "reason":
            found.append((node.value.lineno, code(node.value)))
        elif isinstance(node, ast.Call):
            f = node.func
            name = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            at = positions.get(name)
            if at is not None and len(node.args) > at:
                found.append((node.lineno, code(node.args[at])))
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if _is_reason(t):
                    found.append((node.lineno, code(node.value)))
                elif isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = zip(t.elts, node.value.elts, strict=False)
                    found.extend((node.lineno, code(v)) for e, v in pairs if _is_reason(e))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "reason":
                    found.append((value.lineno, code(value)))
        elif isinstance(node, ast.FunctionDef) and "reason" in node.name:
            for r in ast.walk(node):
                if isinstance(r, ast.Return):
                    found.append((r.lineno, code(r.value)))
        yield from ((line, text) for line, text in found if text is not None)


def test_no_reason_code_is_written_outside_the_enum() -> None:
    """What lineage rows, events, quarantine reports and --json errors carry as a reason
    is a ``Reason`` member, never a string literal beside it."""
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in _python_files()
        for line, text in _literal_reasons(ast.parse(path.read_text(), str(path)))
    ]
    assert found == [], "use shared.reasons.Reason:\n" + "\n".join(found)


PROJECT_PACKAGES = ("shared", "functions", "dhow_local", "dhow_cli", "infra", "layers")


def _error_classes() -> set[type[DhowError]]:
    for module in pkgutil.walk_packages(shared.__path__, "shared."):
        importlib.import_module(module.name)
    importlib.import_module("dhow_local.platform")
    importlib.import_module("infra.compliance")
    out: set[type[DhowError]] = set()
    todo: list[type[DhowError]] = [DhowError]
    while todo:
        cls = todo.pop()
        # The project's own errors: a test's injected error (tests/faults' Crash) is a
        # subclass too once its module is imported, which depends on the run's order.
        if cls.__module__.split(".")[0] in PROJECT_PACKAGES:
            out.add(cls)
        todo.extend(cls.__subclasses__())
    return out


def test_every_error_class_carries_a_member() -> None:
    classes = _error_classes()
    assert len(classes) > 30  # the walk found them: the module-level errors of shared/
    for cls in classes:
        assert isinstance(cls.reason, Reason), f"{cls.__qualname__}.reason is {cls.reason!r}"


@pytest.mark.parametrize(
    ("reason", "retried"),
    [
        (Reason.WORK_IN_PROGRESS, True),  # platform: another delivery has it, try again
        (Reason.VALIDATION_JOB_FAILED, True),
        (Reason.SCHEMA_CHECKS_FAILED, False),  # bad data: the same file fails the same way
        (Reason.GPU_QUOTA_ZERO, False),  # configuration: nothing changes until someone acts
        ("lineage_unavailable", True),  # a code no member has is an unknown failure
    ],
)
def test_the_category_decides_retry(reason: str, retried: bool) -> None:
    assert is_retried(reason) is retried
    assert DhowError("x", reason=reason).retried is retried  # type: ignore[arg-type]


def test_categories_say_who_acts() -> None:
    assert category_of(Reason.EMPTY_OBJECT) is ReasonCategory.BAD_DATA
    assert category_of("spec_invalid") is ReasonCategory.CONFIGURATION
    assert category_of(Reason.EVENT_PUBLISH_FAILED) is ReasonCategory.PLATFORM
    assert category_of("not_a_code") is ReasonCategory.PLATFORM


def test_train_launch_answers_a_configuration_reason_and_raises_a_platform_one() -> None:
    bus = MemoryBus()
    refused = ConfigError("the launcher's role is not set", hint="set DHOW_SAGEMAKER_ROLE_ARN")
    out = TrainLaunchService(
        Recording(fail=refused), bus, MemoryLineage(), backend="sagemaker"
    ).handle(EVENT)
    assert (out.status, out.reason) == ("refused", "config_invalid")
    [failed] = bus.events
    assert isinstance(failed, TrainingCompleted)
    assert failed.status == "Failed"
    assert failed.reason == "the launcher's role is not set (set DHOW_SAGEMAKER_ROLE_ARN)"

    racing = Recording(fail=WorkInProgress("another delivery is launching it"))
    with pytest.raises(WorkInProgress):
        TrainLaunchService(racing, MemoryBus(), MemoryLineage(), backend="sagemaker").handle(EVENT)


def test_an_ingest_rejection_records_its_member_and_the_members_hint() -> None:
    store, lineage = MemoryStore(), MemoryLineage()
    store.put_bytes(ObjectRef(container="raw", key="datasets/customers/x.txt"), b"a,b\n1,2\n")
    svc = IngestService(
        store, MemoryBus(), lineage, staging_container="staging", max_upload_bytes=1 << 20
    )
    out = svc.handle(
        ObjectCreated(container="raw", key="datasets/customers/x.txt", size=8, source_event="test")
    )
    assert out.reason is Reason.UNSUPPORTED_FORMAT
    [row] = lineage.list("customers")
    assert row.attributes["reason"] == "unsupported_format"
    assert row.attributes["hint"] == Reason.UNSUPPORTED_FORMAT.hint


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PlatformError("LocalStack is not answering"), EXIT_PLATFORM),  # 4, as before
        (WorkInProgress("another delivery has it"), EXIT_PLATFORM),  # platform: try again
        (DhowError("x.txt is not .csv", reason=Reason.UNSUPPORTED_FORMAT), EXIT_CONFIG),
        (RegionNotAllowed("eu-west-1 is not a UAE region"), EXIT_CONFIG),
    ],
)
def test_the_category_decides_the_cli_exit_code(error: DhowError, code: int) -> None:
    assert exit_code(error) == code
