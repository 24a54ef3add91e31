"""`dhow compliance report` over both stacks: every resource the program registers is in
the report, a resource outside the UAE or without encryption is a failure, and each
dataset's personal-data columns come with the stores that copy them and for how long."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dhow_cli import main
from pulumi.runtime import config as pulumi_config

from infra.compliance import (
    DATA_COPY_STORES,
    StackResource,
    from_mocked_program,
    from_state,
    stack_report,
)
from infra.config import StackConfig
from infra.policy.rules import violations
from shared.cloud_facts import value
from shared.specs import ColumnPrivacy
from tests.infra.harness import Program, run


def _report(
    cfg: StackConfig, program: Program, resources: list[StackResource] | None = None
) -> Any:
    return stack_report(
        f"{cfg.cloud}-uae",
        resources if resources is not None else from_mocked_program(program),
        cfg.specs,
        source="test",
        topology=cfg.topology,
    )


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_the_report_lists_every_resource_the_program_registers(
    cloud: str, request: pytest.FixtureRequest
) -> None:
    cfg = request.getfixturevalue(f"{cloud}_cfg")
    program = request.getfixturevalue(f"{cloud}_program")
    report = _report(cfg, program)
    listed = collections.Counter((e.type, e.name) for e in report.resources)
    registered = collections.Counter((r.typ, r.name) for r in program.resources)
    assert listed == registered
    assert len(report.resources) > 100
    # The clean program: no failure, and the verdicts are the policy pack's own.
    assert report.failures == []
    assert [v.message for v in report.verdicts] == [
        v.message for v in violations(program.policy_view())
    ]


def test_every_store_names_its_region_encryption_and_retention(aws_program: Program) -> None:
    cfg_entries = {
        e.physical_name: e
        for e in _report_aws(aws_program).resources
        if e.type in ("aws:s3/bucket:Bucket", "aws:sqs/queue:Queue")
    }
    raw = cfg_entries["dhow-uae-prod-raw"]
    assert raw.region == "me-central-1"
    assert raw.encryption.startswith("SSE-KMS")
    assert raw.key is not None
    assert raw.key.startswith("arn:aws:kms:me-central-1:")
    assert raw.public_access == "public access blocked (all four settings)"
    (lifecycle,) = [
        r
        for r in aws_program.of_type(
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
        )
        if r.inputs["bucket"] == "dhow-uae-prod-capture"
    ]
    days = [
        int(rule["expiration"]["days"])
        for rule in lifecycle.inputs["rules"]
        if "expiration" in rule
    ]
    assert f"current objects {days[0]} days" in cfg_entries["dhow-uae-prod-capture"].retention
    ingest_dlq = cfg_entries["dhow-uae-prod-ingest-dlq"]
    assert ingest_dlq.retention == "messages 14 days"
    assert ingest_dlq.encryption == "SSE-KMS"


def _report_aws(program: Program) -> Any:
    from tests.infra.conftest import stack_config

    return _report(stack_config("aws"), program)


def test_a_stack_outside_the_uae_fails_on_every_resource(aws_cfg: StackConfig) -> None:
    # A mutated program: the config check bypassed, the provider pointed at Ireland.
    program = run(dataclasses.replace(aws_cfg, region="eu-west-1"))
    report = _report(aws_cfg, program)
    aws = [e for e in report.resources if e.type.startswith("aws:")]
    assert all(e.region == "eu-west-1" for e in aws)
    failing = {f.resource for f in report.failures if "me-central-1" in f.what}
    assert failing == {f"{e.type} {e.name}" for e in aws}


def test_an_azure_resource_outside_the_uae_is_a_failure(
    azure_cfg: StackConfig, azure_program: Program
) -> None:
    resources = [
        dataclasses.replace(r, props={**r.props, "location": "westeurope"})
        if r.typ == "azure-native:storage:StorageAccount"
        else r
        for r in from_mocked_program(azure_program)
    ]
    report = _report(azure_cfg, azure_program, resources)
    failing = [f for f in report.failures if "westeurope" in f.what]
    accounts = azure_program.of_type("azure-native:storage:StorageAccount")
    assert {f.resource for f in failing} == {
        f"azure-native:storage:StorageAccount {a.name}" for a in accounts
    }


def test_a_store_without_encryption_is_a_failure(
    aws_cfg: StackConfig, aws_program: Program
) -> None:
    def strip(r: StackResource) -> StackResource | None:
        if r.typ == "aws:sqs/queue:Queue" and r.name == "ingest":
            return dataclasses.replace(
                r, props={k: v for k, v in r.props.items() if k != "kmsMasterKeyId"}
            )
        if r.typ.startswith("aws:s3/bucketServerSideEncryption") and r.props["bucket"].endswith(
            "-curated"
        ):
            return None
        return r

    resources = [s for r in from_mocked_program(aws_program) if (s := strip(r)) is not None]
    report = _report(aws_cfg, aws_program, resources)
    unencrypted = {
        f.resource for f in report.failures if f.what == "holds data without encryption at rest"
    }
    assert unencrypted == {"aws:sqs/queue:Queue ingest", "aws:s3/bucket:Bucket curated"}
    # The policy pack refuses both too, and says so in the report.
    assert {v.policy for v in report.verdicts} == {"encrypted-at-rest"}
    assert len(report.verdicts) == 2


def test_a_bucket_without_its_public_access_block_is_a_failure(
    aws_cfg: StackConfig, aws_program: Program
) -> None:
    resources = [
        r
        for r in from_mocked_program(aws_program)
        if not (r.typ.endswith("BucketPublicAccessBlock") and r.props["bucket"].endswith("-raw"))
    ]
    report = _report(aws_cfg, aws_program, resources)
    opened = [f for f in report.failures if f.what.startswith("open to the public")]
    assert [f.resource for f in opened] == ["aws:s3/bucket:Bucket raw"]
    for flag in value("aws.s3.public_access_block_settings"):
        assert flag in opened[0].what


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_personal_data_columns_come_with_their_copies_and_retention(
    cloud: str, request: pytest.FixtureRequest
) -> None:
    cfg = request.getfixturevalue(f"{cloud}_cfg")
    (shipped,) = cfg.specs
    marks = {c: ColumnPrivacy(personal_data=True) for c in ("customer_id", "age", "emirate")}
    marked = shipped.model_copy(update={"privacy": marks})
    cfg = dataclasses.replace(cfg, specs=(marked,))
    report = _report(cfg, request.getfixturevalue(f"{cloud}_program"))
    stores = {
        e.physical_name: e
        for e in report.resources
        if e.type in ("aws:s3/bucket:Bucket", "azure-native:storage:BlobContainer")
    }
    (customers,) = [d for d in report.datasets if d.dataset == "customers"]
    assert customers.personal_data == ["customer_id", "age", "emirate"]
    assert [c.store for c in customers.copies] == list(DATA_COPY_STORES)
    for copy in customers.copies:
        assert copy.name == cfg.topology.bucket(copy.store).name
        assert copy.retention == stores[copy.name].retention
        assert copy.region in ("me-central-1", "uaenorth")


def test_every_role_lists_its_grants_and_the_functions_that_use_it(
    aws_cfg: StackConfig, aws_program: Program, azure_cfg: StackConfig, azure_program: Program
) -> None:
    aws = {r.name: r for r in _report(aws_cfg, aws_program).roles}
    assert len(aws) == len(aws_program.of_type("aws:iam/role:Role"))
    ingest = aws["dhow-uae-prod-ingest-fn"]
    assert ingest.used_by == ["dhow-uae-prod-ingest (runs as it)"]
    assert ingest.assumed_by == ["lambda.amazonaws.com"]
    assert any("s3:GetObject" in g.actions for g in ingest.grants)
    sagemaker = next(r for n, r in aws.items() if n.endswith("-sagemaker"))
    assert "dhow-uae-prod-train-launch (passes it to its jobs)" in sagemaker.used_by

    azure = _report(azure_cfg, azure_program).roles
    assignments = azure_program.of_type("azure-native:authorization:RoleAssignment")
    assert sum(len(r.grants) for r in azure) == len(assignments)
    (app,) = [r for r in azure if r.name == "dhow-uae-prod-functions"]
    assert {u.split(" ")[0] for u in app.used_by} == {f.name for f in azure_cfg.topology.functions}
    assert {g.role for g in app.grants} >= {"Storage Blob Data Contributor"}


def _export(program: Program, stack: str) -> dict[str, Any]:
    """The program's resources as ``pulumi stack export`` writes them: a URN each, the
    provider as ``<provider URN>::<provider id>``, inputs and outputs as JSON."""
    root = f"urn:pulumi:{stack}::dhow"
    providers = {
        f"::{p.name}::{p.id}": f"{root}::{p.typ}::{p.name}::{p.id}"
        for p in program.resources
        if p.typ.startswith("pulumi:providers:")
    }

    def provider_of(ref: str) -> dict[str, str]:
        found = [urn for suffix, urn in providers.items() if ref.endswith(suffix)]
        return {"provider": found[0]} if found else {}

    resources: list[dict[str, Any]] = [
        {"urn": f"{root}::pulumi:pulumi:Stack::dhow-{stack}", "type": "pulumi:pulumi:Stack"}
    ]
    for r in program.resources:
        resources.append(
            {
                "urn": f"{root}::{r.typ}::{r.name}",
                "type": r.typ,
                "id": r.id,
                "inputs": json.loads(json.dumps(r.inputs, default=str)),
                "outputs": json.loads(json.dumps(r.outputs, default=str)),
                **provider_of(r.provider_id),
            }
        )
    return {"version": 3, "deployment": {"resources": resources}}


def test_a_stack_export_reads_as_the_program_does(
    aws_cfg: StackConfig, aws_program: Program
) -> None:
    from_program = _report(aws_cfg, aws_program)
    exported = from_state(_export(aws_program, "aws-uae"))
    from_export = stack_report("aws-uae", exported, aws_cfg.specs, source="state")
    key = [
        (e.type, e.name, e.region, e.encryption, e.public_access, e.retention)
        for e in from_program.resources
    ]
    assert [
        (e.type, e.name, e.region, e.encryption, e.public_access, e.retention)
        for e in from_export.resources
    ] == key
    # The stage (and so the dataset copies) is read from the resources' tags.
    assert [d.copies for d in from_export.datasets] == [d.copies for d in from_program.datasets]


def test_dhow_compliance_report_writes_both_files_and_exits_1_on_a_failure(
    aws_program: Program, tmp_path: Path
) -> None:
    state = _export(aws_program, "aws-uae")
    for r in state["deployment"]["resources"]:
        if r["type"] == "pulumi:providers:aws":
            r["inputs"]["region"] = "eu-west-1"
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main, ["compliance", "report", "--from-state", str(path), "--out", str(out), "--json"]
    )
    assert result.exit_code == 1, result.output
    answer = json.loads(result.stdout)  # --json: nothing else on stdout
    assert answer["ok"] is False
    assert answer["failures"]
    assert json.loads((out / "compliance.json").read_text())["ok"] is False
    assert "eu-west-1" in (out / "compliance.html").read_text()


def test_dhow_compliance_report_runs_the_stack_file_and_passes(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["compliance", "report", "--cloud", "azure", "--out", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True
    (stack,) = json.loads((tmp_path / "compliance.json").read_text())["stacks"]
    assert stack["stack"] == "azure-uae"
    assert stack["source"] == "the Pulumi program under mocks"


def test_a_stack_file_outside_the_uae_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Pulumi.aws-uae.yaml").write_text(
        "config:\n  dhow:cloud: aws\n  dhow:stage: uae-prod\n  dhow:region: eu-west-1\n"
    )
    monkeypatch.setattr("infra.compliance.STACKS_DIR", tmp_path)
    before = pulumi_config.CONFIG.get()
    result = CliRunner().invoke(
        main, ["compliance", "report", "--cloud", "aws", "--out", str(tmp_path), "--json"]
    )
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["reason"] == "stack_config_invalid"
    assert "me-central-1" in error["message"]
    # The stack file's values were the runtime's configuration only while it was read.
    assert pulumi_config.CONFIG.get() == before
