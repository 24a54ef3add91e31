"""RBAC measured, not believed: every Azure Storage call each function made during the
Azurite integration tests, checked against the role assignments `pulumi up` gives the
Function App's identity.

The calls are recorded by ``shared/adapters/azure_calls.py`` (this folder's conftest points
``DHOW_AZURE_CALL_LOG`` at the session's tmp dir). Each call's REST operation is mapped to
the data actions it needs by ``azure.rbac.storage_operation_actions``, and each action is
granted or not by the built-in roles' documented dataActions,
``azure.rbac.builtin_role_data_actions``, assigned on the call's own container, queue or
table (tests/infra/rbac_check.py says how, and why with no external evaluator). All the
functions share one identity on Azure, so every call is judged against the app's grants.

Azurite accepts any call from anyone: this is where a missing grant shows before Azure
returns 403 AuthorizationPermissionMismatch. The report, with the grants no test exercised,
is written beside the log. This module runs after the Azure flow tests (its name sorts
after theirs; the conftest orders the AWS check last).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shared.topology import build_topology
from tests.infra.conftest import stack_config
from tests.infra.harness import run
from tests.infra.rbac_check import Assignment, assignments, granted_by, needs_of

APP = "app-principal"
# Code that plays a managed service locally (local training stands in for an Azure ML
# job, the local router for the cloud's traffic split): in the cloud those calls are made
# by that service's identity, not the app's.
STAND_INS = ("dhow_local.",)
# The local runner plays the Functions host, which makes its trigger's calls with the
# app's identity: judged like the function's own.
HOST_PLAYERS = ("dhow_local.azure_runner",)
# Grants of the app that are for the host or a service, not for a function's storage
# calls: telemetry, the workspace, and the host's own account.
_NOT_STORAGE = {"insights", "workspace", "account"}


def _calls(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _stand_in(call: dict[str, Any]) -> bool:
    origin = str(call.get("origin") or "")
    return origin.startswith(STAND_INS) and not origin.startswith(HOST_PLAYERS)


@pytest.fixture(scope="module")
def held() -> list[Assignment]:
    cfg = stack_config("azure")
    return [a for a in assignments(run(cfg), cfg.topology) if a.principal == APP]


def test_every_recorded_azure_call_is_allowed_by_the_apps_role_assignments(
    azure_call_log: Path, held: list[Assignment]
) -> None:
    calls = _calls(azure_call_log)
    if not calls:
        pytest.skip("no Azure flow test ran in this session: nothing was recorded")
    denied: list[str] = []
    unmapped: Counter[str] = Counter()
    used: set[Assignment] = set()
    judged = allowed = stand_in = 0
    seen: Counter[str] = Counter()
    for call in calls:
        if _stand_in(call):
            stand_in += 1
            continue
        needs = needs_of(call, build_topology(call["stage"]))
        if needs is None:
            unmapped[f"{call['service']} {call['operation']}"] += 1
            continue
        judged += 1
        seen[f"{call['function']}: {call['operation']}"] += 1
        grants = [granted_by(n, held) for n in needs]
        if all(grants):
            allowed += 1
            for g in grants:
                used |= g
        else:
            missing = [f"{n.kind}:{n.scope}" for n, g in zip(needs, grants, strict=True) if not g]
            denied.append(f"{call['function']} {call['operation']} on {', '.join(missing)}")
    unexercised = sorted(
        f"{a.role[:8]} on {a.kind}:{a.scope}"
        for a in set(held) - used
        if a.kind not in _NOT_STORAGE
    )
    report = {
        "calls_recorded": len(calls),
        "stand_in_calls": stand_in,
        "calls_judged": judged,
        "calls_allowed": allowed,
        "denied": sorted(set(denied)),
        "unmapped_operations": dict(unmapped),
        "grants_never_exercised": unexercised,
        "calls_by_function": dict(sorted(seen.items())),
    }
    (azure_call_log.parent / "azure-rbac-report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    assert not unmapped, f"calls whose operation the table does not know: {dict(unmapped)}"
    assert not denied, f"calls the app's roles would refuse in Azure: {sorted(set(denied))}"
    assert judged > 0
