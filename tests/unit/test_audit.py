"""The audit trail: each action is one entry naming who (as authenticated), what, which
version, why and when; `dhow audit` filters it and exports JSON and CSV; and the rows it
is read from cannot be written over once finished, in each store."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import botocore.session
import pytest
import requests
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.pipeline.transport import RequestsTransport, RequestsTransportResponse
from azure.data.tables import TableClient
from botocore.stub import Stubber
from click.testing import CliRunner
from dhow_cli import main
from dhow_cli.identity import caller_principal

from shared.adapters.aws import DynamoLineageStore
from shared.adapters.azure import TableLineageStore
from shared.audit import AuditFilter, AuditTrail, entries_of, to_csv
from shared.cloud_facts import fact, value
from shared.events import DatasetValidated, ObjectRef
from shared.lineage import FINISHED_STATUSES, LineageRecord
from shared.ports import FinishedEntryImmutable
from shared.services import deploy, drift, validate
from shared.services.ingest import IngestService
from shared.services.train_launch import TrainLaunchService
from shared.settings import Settings
from shared.specs import load_spec
from shared.triggers import ObjectCreated
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore
from tests.unit.test_train_launch_service import Recording

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SHA = "ab" * 32


def row(
    kind: str, status: str, record_id: str, minutes: int = 0, **attributes: Any
) -> LineageRecord:
    at = T0 + timedelta(minutes=minutes)
    return LineageRecord(
        dataset=str(attributes.pop("dataset", "customers")),
        record_id=record_id,
        kind=kind,
        status=status,
        attributes=attributes,
        created_at=at,
        updated_at=at + timedelta(seconds=30),
    )


# --- the rule itself ---------------------------------------------------------------


def test_finished_statuses_are_each_services_own_done_statuses() -> None:
    """A finished row is one its service never claims again: else a retry would hit the
    refusal. The table is the services' own sets, so the two cannot drift apart."""
    assert FINISHED_STATUSES["deploy"] == deploy.DONE
    assert FINISHED_STATUSES["validate"] == validate._DONE
    assert FINISHED_STATUSES["drift"] == drift.VERDICTS
    # No kind holds more than one DynamoDB IN list can name.
    limit = value("aws.dynamodb.condition_in_max_operands")
    assert max(len(v) for v in FINISHED_STATUSES.values()) <= limit


# --- one entry per action ----------------------------------------------------------


def test_each_action_is_one_entry_with_who_why_and_when() -> None:
    arn = "arn:aws:sts::123456789012:assumed-role/DataScientist/amal"
    rows = [
        row(
            "ingest",
            "ingested",
            f"ingest:{SHA}",
            0,
            sha256=SHA,
            version=SHA[:12],
            source="s3://raw/datasets/customers/a.csv",
            uploaded_by="AWS:AROAEXAMPLE:intern",
            claimed_uploader="ceo",
            uploaded_at=(T0 - timedelta(minutes=1)).isoformat(),
            correlation_id="u-1",
        ),
        row(
            "ingest_rejected",
            "rejected",
            "rejected:1",
            1,
            dataset="_unsorted",
            reason="key_outside_prefix",
        ),
        row("validate", "validated", f"validate:{SHA}", 2, sha256=SHA, spec_version="1+a"),
        row(
            "train",
            "launched",
            "train:job-1",
            3,
            sha256=SHA,
            job_name="job-1",
            instance_type="ml.g5.xlarge",
        ),
        row(
            "register",
            "approved",
            "register:job-1",
            4,
            model_version=1,
            gate="approved: f1 0.91 >= 0.8",
        ),
        row(
            "deploy",
            "completed",
            "deploy:000001",
            5,
            model_version=1,
            strategy="canary",
            ended_at=(T0 + timedelta(minutes=15)).isoformat(),
        ),
        row(
            "drift",
            "drift",
            "drift:c1",
            20,
            requested_by="schedule",
            model_version=1,
            drifted_columns=["tenure"],
            action="retrain",
            policy="retrain",
        ),
        row(
            "train",
            "launched",
            "train:job-2",
            21,
            sha256=SHA,
            job_name="job-2",
            instance_type="ml.g5.xlarge",
            requested_by=arn,
            reason="new labels from finance",
        ),
        row(
            "rollback",
            "done",
            "rollback:k",
            30,
            from_version=2,
            to_version=1,
            requested_by="local:amal (unauthenticated)",
            why="v2 misroutes VIP customers",
        ),
        # State rows: what moved them is on record elsewhere.
        row("serving", "Idle", "serving:router", 31),
        row("drift_policy", "retrain", "drift:policy", 32),
    ]
    got = {(e.kind, e.record_id): e for r in rows for e in entries_of(r)}
    upload = got[("upload", f"ingest:{SHA}")]
    assert (upload.principal, upload.principal_source) == ("AWS:AROAEXAMPLE:intern", "storage")
    assert upload.reason == "claims to be ceo"  # the claim is shown, never taken as who
    assert upload.at == T0 - timedelta(minutes=1)  # when storage says it was uploaded
    assert (upload.version, upload.correlation_id) == (SHA[:12], "u-1")
    ingest = got[("ingest", f"ingest:{SHA}")]
    assert (ingest.principal, ingest.action, ingest.finished) == ("dhow:ingest", "ingested", True)
    rejected = got[("ingest", "rejected:1")]
    assert (rejected.dataset, rejected.reason) == ("_unsorted", "key_outside_prefix")
    assert got[("validation", f"validate:{SHA}")].version == f"{SHA[:12]}@1+a"
    auto = got[("training_launch", "train:job-1")]
    assert (auto.principal, auto.reason) == ("dhow:train-launch", "dataset validated")
    gate = got[("gate", "register:job-1")]
    assert (gate.principal, gate.version, gate.reason) == (
        "dhow:register",
        "v1",
        "approved: f1 0.91 >= 0.8",
    )
    assert got[("registration", "register:job-1")].action == "registered v1 Approved"
    [start, end] = [e for e in entries_of(rows[5])]
    assert (start.at, start.action) == (
        T0 + timedelta(minutes=5),
        "started v1 (canary, from nothing)",
    )
    assert (end.at, end.action) == (T0 + timedelta(minutes=15), "completed")
    check = got[("drift_check", "drift:c1")]
    assert (check.principal, check.reason) == ("dhow:drift-check", "drift in tenure")
    policy = got[("policy_action", "drift:c1")]
    assert (policy.action, policy.reason) == (
        "retrain requested",
        "policy retrain: drift in tenure",
    )
    manual = got[("manual_retrain", "train:job-2")]
    assert (manual.principal, manual.principal_source, manual.reason) == (
        arn,
        "sts",
        "new labels from finance",
    )
    back = got[("rollback", "rollback:k")]
    assert (back.principal_source, back.action, back.reason) == (
        "local",
        "v2 -> v1",
        "v2 misroutes VIP customers",
    )
    assert not [k for k in got if k[1] in ("serving:router", "drift:policy")]


def test_a_spec_change_is_on_record_when_the_platform_first_uses_it() -> None:
    lineage = MemoryLineage()
    for i, spec in enumerate(("1+a", "1+a", "2+b")):
        lineage.put_if_absent(
            row("validate", "validated", f"validate:{i}", i, sha256=f"{i}" * 64, spec_version=spec)
        )
    [change] = AuditTrail(lineage).entries(AuditFilter(kinds=frozenset({"spec_change"})))
    assert (change.action, change.at, change.principal_source) == (
        "spec 1+a -> 2+b",
        T0 + timedelta(minutes=2),
        "unrecorded",
    )


def test_an_upload_through_ingest_names_who_storage_authenticated() -> None:
    """From the real ingest service's row, not a hand-made one."""
    store, lineage = MemoryStore(), MemoryLineage()
    ref = ObjectRef(container="raw", key="datasets/customers/a.csv")
    store.put_bytes(ref, b"a,b\n1,2\n", {"dhow_uploaded_by": "ceo"})
    IngestService(
        store, MemoryBus(), lineage, staging_container="staging", max_upload_bytes=1 << 20
    ).handle(
        ObjectCreated(
            container="raw",
            key=ref.key,
            size=8,
            uploader="AWS:AROAEXAMPLE:intern",
            event_time=T0,
            source_event="test",
        )
    )
    [upload] = AuditTrail(lineage).entries(AuditFilter(kinds=frozenset({"upload"})))
    assert (upload.principal, upload.principal_source, upload.at) == (
        "AWS:AROAEXAMPLE:intern",
        "storage",
        T0,
    )


def test_a_manual_retrain_records_the_principal_and_the_reason() -> None:
    lineage = MemoryLineage()
    event = DatasetValidated(
        dataset="customers",
        correlation_id="u-1",
        sha256=SHA,
        rows=400,
        spec_version=load_spec("customers").spec_version,  # as validate announced
        curated=ObjectRef(container="c", key="datasets/customers/x/data.parquet"),
    )
    who = "entra:amal@contoso.ae oid=00000000-0000-0000-0000-0000000000aa"
    TrainLaunchService(Recording(), MemoryBus(), lineage, backend="local").handle(
        event, run_tag="manual-1", requested_by=who, reason="new labels"
    )
    [entry] = AuditTrail(lineage).entries()
    assert (entry.kind, entry.principal, entry.principal_source, entry.reason) == (
        "manual_retrain",
        who,
        "entra",
        "new labels",
    )


def test_filters_keep_only_what_they_name() -> None:
    lineage = MemoryLineage()
    lineage.put_if_absent(
        row(
            "rollback",
            "done",
            "rollback:a",
            0,
            requested_by="arn:aws:iam::1:user/amal",
            from_version=2,
            to_version=1,
            why="x",
        )
    )
    lineage.put_if_absent(
        row(
            "rollback",
            "done",
            "rollback:b",
            60,
            dataset="loans",
            requested_by="arn:aws:iam::1:user/omar",
            from_version=3,
            to_version=2,
            why="y",
        )
    )
    trail = AuditTrail(lineage, page_size=1)  # every page holds one row: paging is exercised
    assert [e.record_id for e in trail.entries()] == ["rollback:a", "rollback:b"]
    assert [e.record_id for e in trail.entries(AuditFilter(dataset="loans"))] == ["rollback:b"]
    assert [e.record_id for e in trail.entries(AuditFilter(principal="AMAL"))] == ["rollback:a"]
    later = AuditFilter(since=T0 + timedelta(minutes=1))
    assert [e.record_id for e in trail.entries(later)] == ["rollback:b"]
    assert trail.entries(AuditFilter(until=T0 - timedelta(minutes=1))) == []
    assert trail.entries(AuditFilter(kinds=frozenset({"upload"}))) == []


def test_an_audit_too_large_to_read_says_how_to_narrow_it() -> None:
    lineage = MemoryLineage()
    for i in range(5):
        lineage.put_if_absent(row("rollback", "done", f"rollback:{i}", i, dataset=f"d{i}"))
    from shared.audit import AuditTooLarge

    with pytest.raises(AuditTooLarge, match="more than 3") as err:
        AuditTrail(lineage, max_rows=3, page_size=2).entries()
    assert "--dataset" in err.value.hint
    assert len(AuditTrail(lineage, max_rows=3).entries(AuditFilter(dataset="d1"))) == 1


# --- dhow audit --------------------------------------------------------------------


@pytest.fixture
def cli_lineage(monkeypatch: pytest.MonkeyPatch) -> MemoryLineage:
    lineage = MemoryLineage()
    lineage.put_if_absent(
        row(
            "rollback",
            "done",
            "rollback:a",
            0,
            requested_by="arn:aws:iam::1:user/amal",
            from_version=2,
            to_version=1,
            why="v2, a bad, model",
        )
    )
    lineage.put_if_absent(
        row(
            "validate",
            "rejected",
            f"validate:{SHA}",
            5,
            sha256=SHA,
            spec_version="1+a",
            reason="column_in_dataframe",
        )
    )

    class Ports:
        pass

    ports = Ports()
    ports.lineage = lineage  # type: ignore[attr-defined]
    monkeypatch.setattr("dhow_cli.app.resolve_settings", lambda: Settings())
    monkeypatch.setattr("shared.wiring.build_ports", lambda _settings: ports)
    return lineage


def test_dhow_audit_json(cli_lineage: MemoryLineage) -> None:
    r = CliRunner().invoke(main, ["audit", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [(e["kind"], e["principal"]) for e in out["entries"]] == [
        ("rollback", "arn:aws:iam::1:user/amal"),
        ("validation", "dhow:validate"),
    ]
    r = CliRunner().invoke(
        main, ["audit", "--json", "--kind", "validation", "--since", "2026-11-02T09:01:00"]
    )
    [only] = json.loads(r.output)["entries"]
    assert (only["reason"], only["status"], only["finished"]) == (
        "column_in_dataframe",
        "rejected",
        True,
    )
    # 13:00 in the Gulf is 09:00 UTC: the rollback at 09:00 is kept, the 09:05 one is not.
    r = CliRunner().invoke(main, ["audit", "--json", "--until", "2026-11-02T13:00:00+04:00"])
    assert [e["kind"] for e in json.loads(r.output)["entries"]] == ["rollback"]
    assert CliRunner().invoke(main, ["audit", "--kind", "nonsense"]).exit_code == 2


def test_dhow_audit_csv_for_a_compliance_officer(
    cli_lineage: MemoryLineage, tmp_path: Path
) -> None:
    target = tmp_path / "audit.csv"
    r = CliRunner().invoke(main, ["audit", "--csv", str(target), "--principal", "amal"])
    assert r.exit_code == 0, r.output
    assert "wrote 1 entries" in r.output
    [entry] = list(csv.DictReader(io.StringIO(target.read_text())))
    assert entry["principal"] == "arn:aws:iam::1:user/amal"
    assert entry["reason"] == "v2, a bad, model"  # quoted by csv, read back whole
    assert entry["principal_source"] == "sts"
    assert entry["at"].startswith("2026-11-02T09:00:00")
    assert to_csv([]).splitlines() == [",".join(entry)]


# --- who a person is ---------------------------------------------------------------


def test_a_manual_rollback_records_the_authenticated_principal_not_dhow_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: `$DHOW_USER` (anyone can set it) or the login name went into the row."""
    asked: list[tuple[str, str]] = []

    class Deploy:
        def rollback(self, dataset: str, to: int | None, who: str, why: str) -> Any:
            asked.append((who, why))
            from shared.services.deploy import DeployOutcome

            return DeployOutcome("rolled_back", "d-1", 1)

    monkeypatch.setenv("DHOW_USER", "ceo")
    monkeypatch.setattr("dhow_cli.app.resolve_settings", lambda: Settings())
    monkeypatch.setattr("shared.wiring.build_deploy_service", lambda _s: Deploy())
    monkeypatch.setattr(
        "dhow_cli.identity.caller_principal", lambda _s: "arn:aws:sts::1:assumed-role/Ops/amal"
    )
    r = CliRunner().invoke(
        main, ["deploy", "rollback", "customers", "--reason", "bad v2", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert asked == [("arn:aws:sts::1:assumed-role/Ops/amal", "bad v2")]
    assert json.loads(r.output)["requested_by"] == "arn:aws:sts::1:assumed-role/Ops/amal"


def test_on_aws_the_principal_is_the_arn_sts_returns() -> None:
    rule = fact("aws.sts.get_caller_identity").value
    # botocore's own model of the call has the output the code reads.
    model: Any = botocore.session.get_session().get_service_model("sts")
    assert rule["principal"] in model.operation_model(rule["operation"]).output_shape.members
    sts = botocore.session.get_session().create_client("sts", region_name="me-central-1")
    arn = "arn:aws:sts::123456789012:assumed-role/DataScientist/amal"
    with Stubber(sts) as stub:
        stub.add_response(
            "get_caller_identity",
            {"Arn": arn, "Account": "123456789012", "UserId": "AROAEXAMPLE:amal"},
            {},
        )
        assert caller_principal(Settings(), sts=sts) == arn


def _jwt(claims: dict[str, Any]) -> str:
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.sig"


class _Credential:
    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = claims

    def get_token(self, *_scopes: str) -> Any:
        class Token:
            token = _jwt(self.claims)

        return Token()


def test_on_azure_the_principal_is_the_tokens_oid_and_name() -> None:
    rule = value("azure.entra.access_token_principal")
    azure = Settings(cloud="azure")
    oid = "00000000-0000-0000-0000-0000000000aa"
    user = caller_principal(
        azure, credential=_Credential({rule["id"]: oid, "upn": "amal@contoso.ae"})
    )
    assert user == f"entra:amal@contoso.ae oid={oid}"
    # An app-only token has no upn: the client's id names it, beside its oid.
    app = caller_principal(azure, credential=_Credential({"oid": oid, "appid": "app-1"}))
    assert app == f"entra:app-1 oid={oid}"
    from shared.errors import DhowError

    with pytest.raises(DhowError, match="oid"):
        caller_principal(azure, credential=_Credential({"upn": "amal@contoso.ae"}))


def test_locally_the_principal_is_the_os_user_marked_unauthenticated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DHOW_USER", "ceo")
    monkeypatch.setattr("getpass.getuser", lambda: "amal")
    local = Settings(aws_endpoint_url="http://localhost:4566")
    assert caller_principal(local) == "local:amal (unauthenticated)"


# --- append-only, per store --------------------------------------------------------


def test_dynamodb_checks_kind_and_status_in_the_write() -> None:
    rec = row("deploy", "started", "deploy:000001", model_version=1)
    cond = DynamoLineageStore.replace_condition(rec, 3)
    finished = sorted(deploy.DONE)
    assert cond["ConditionExpression"] == (
        "revision = :r AND #k = :k AND NOT (#s IN (:f0, :f1, :f2, :f3))"
    )
    assert [cond["ExpressionAttributeValues"][f":f{i}"]["S"] for i in range(4)] == finished
    assert cond["ExpressionAttributeNames"] == {"#k": "kind", "#s": "status"}
    # A state kind has no finished status: only the revision and kind are compared.
    state = DynamoLineageStore.replace_condition(row("serving", "Idle", "serving:router"), 0)
    assert state["ConditionExpression"] == "revision = :r AND #k = :k"
    # botocore's model: PutItem takes the parameter, and the error carries the item.
    rule = value("aws.dynamodb.condition_failure_returns_item")
    ddb: Any = botocore.session.get_session().get_service_model("dynamodb")
    param = ddb.operation_model("PutItem").input_shape.members[rule["parameter"]]
    assert param.enum == rule["enum"]
    assert rule["member"] in ddb.shape_for(rule["error"]).members
    scan = value("aws.dynamodb.scan_page")
    assert scan["start"] in ddb.operation_model("Scan").input_shape.members
    assert scan["next"] in ddb.operation_model("Scan").output_shape.members


class _TableRecorder(RequestsTransport):  # type: ignore[misc]  # untyped in azure-core
    """Table storage as its REST pages describe it, answering from ``entities``, and
    recording each request the SDK sends."""

    def __init__(self, entities: dict[tuple[str, str], dict[str, Any]]) -> None:
        super().__init__()
        self.entities = entities
        self.sent: list[Any] = []

    def send(self, request: Any, **_: Any) -> RequestsTransportResponse:
        self.sent.append(request)
        raw = requests.Response()
        raw.reason = "canned"
        raw.headers["Content-Type"] = "application/json;odata=minimalmetadata"
        parts = urlsplit(request.url)
        if request.method == "GET" and "(PartitionKey=" in parts.path:
            [entity] = self.entities.values()
            raw.status_code = 200
            raw._content = json.dumps(entity).encode()
        elif request.method == "GET":  # Query Entities: one per page, continuation headers
            query = parse_qs(parts.query)
            keys = sorted(self.entities)
            start = (
                keys.index((query["NextPartitionKey"][0], query["NextRowKey"][0]))
                if "NextPartitionKey" in query
                else 0
            )
            top = int(query["$top"][0])
            raw.status_code = 200
            raw._content = json.dumps(
                {"value": [self.entities[k] for k in keys[start : start + top]]}
            ).encode()
            if start + top < len(keys):
                pk, rk = keys[start + top]
                raw.headers["x-ms-continuation-NextPartitionKey"] = pk
                raw.headers["x-ms-continuation-NextRowKey"] = rk
        else:
            raw.status_code = 204
            raw._content = b""
            raw.headers["ETag"] = "W/\"datetime'2026-11-02T09%3A05%3A00Z'\""
        return RequestsTransportResponse(request, raw)


def _entity(r: LineageRecord, etag: str) -> dict[str, Any]:
    return {"odata.etag": etag, **TableLineageStore._entity(r)}


def _table(transport: _TableRecorder) -> TableLineageStore:
    key = base64.b64encode(b"k" * 32).decode()
    client = TableClient(
        "https://acct.table.core.windows.net",
        "lineage",
        credential=AzureNamedKeyCredential("acct", key),
        transport=transport,
    )
    return TableLineageStore(client)


def test_table_storage_refuses_a_finished_row_before_any_write() -> None:
    etag = "W/\"datetime'2026-11-02T09%3A00%3A30Z'\""
    done = row("rollback", "done", "rollback:k", why="x")
    transport = _TableRecorder({("customers", "rollback:k"): _entity(done, etag)})
    with pytest.raises(FinishedEntryImmutable):
        _table(transport).replace(done.model_copy(update={"attributes": {"why": "y"}}), 0)
    assert [r.method for r in transport.sent] == ["GET"]  # read, refused, nothing written


def test_table_storage_writes_an_unfinished_row_only_if_its_etag_still_matches() -> None:
    rule = value("azure.tables.update_if_match")
    etag = "W/\"datetime'2026-11-02T09%3A00%3A30Z'\""
    started = row("deploy", "started", "deploy:000001", model_version=1)
    transport = _TableRecorder({("customers", "deploy:000001"): _entity(started, etag)})
    assert _table(transport).replace(started.model_copy(update={"status": "completed"}), 0)
    get, put = transport.sent
    assert get.method == "GET"
    assert put.method == "PUT"
    assert put.headers[rule["header"]] == etag != rule["unconditional"]
    assert json.loads(put.body)["status"] == "completed"


def test_table_storage_scan_pages_with_its_continuation() -> None:
    rule = value("azure.tables.query_page")
    rows = {
        (f"d{i}", f"rollback:{i}"): _entity(
            row("rollback", "done", f"rollback:{i}", i, dataset=f"d{i}"), "e"
        )
        for i in range(3)
    }
    transport = _TableRecorder(rows)
    store = _table(transport)
    first = store.scan(page_size=2)
    assert [r.record_id for r in first.records] == ["rollback:0", "rollback:1"]
    assert first.next_cursor is not None
    second = store.scan(first.next_cursor, page_size=5000)
    assert [r.record_id for r in second.records] == ["rollback:2"]
    assert second.next_cursor is None
    query = parse_qs(urlsplit(transport.sent[-1].url).query)
    assert (query[rule["params"][0]], query[rule["params"][1]]) == (["d2"], ["rollback:2"])
    assert int(query["$top"][0]) == rule["max_entities"]  # 5000 asked, the service's cap sent
