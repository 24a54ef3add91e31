"""CLI error paths: clear messages, JSON on request, non-zero exits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from dhow_cli import main


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("DHOW_LOCAL_HOME", str(tmp_path / "home"))
    return CliRunner()


def test_non_uae_region_is_refused_with_json(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    f = tmp_path / "a.csv"
    f.write_text("a\n1\n")
    r = runner.invoke(main, ["upload", str(f), "--dataset", "d", "--json"])
    assert r.exit_code == 2
    err = json.loads(r.output)["error"]
    assert err["reason"] == "region_not_allowed"
    assert "me-central-1" in err["hint"]


def test_unsupported_file_is_refused_before_upload(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "a.xlsx"
    f.write_bytes(b"PK")
    r = runner.invoke(main, ["upload", str(f), "--dataset", "d"])
    assert r.exit_code == 2
    assert "unsupported_format" in r.output


def test_bad_dataset_name_says_what_is_allowed(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("a\n1\n")
    r = runner.invoke(main, ["upload", str(f), "--dataset", "Bad Name", "--json"])
    assert r.exit_code == 2
    assert "lowercase" in json.loads(r.output)["error"]["hint"]


def test_status_without_platform_exits_4(runner: CliRunner) -> None:
    r = runner.invoke(main, ["local", "status", "--json"])
    assert r.exit_code == 4
    assert json.loads(r.output)["ready"] is False


def test_every_verb_documents_json(runner: CliRunner) -> None:
    for verb in (["upload"], ["lineage"], ["local", "up"], ["local", "down"], ["local", "status"]):
        assert "--json" in runner.invoke(main, [*verb, "--help"]).output, verb


SAMPLE = Path(__file__).resolve().parents[2] / "localstack/samples/customers.csv"


def test_dataset_init_writes_a_strict_spec_and_never_overwrites(
    runner: CliRunner, tmp_path: Path
) -> None:
    specs = tmp_path / "specs"
    args = [
        "dataset",
        "init",
        "churn",
        "--from",
        str(SAMPLE),
        "--target",
        "churned",
        "--unique",
        "customer_id",
        "--specs-dir",
        str(specs),
        "--json",
    ]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    out = json.loads(first.output)
    assert out["task"] == "classification"
    text = (specs / "churn.yaml").read_text()
    assert "strict: true" in text
    assert "unique: true" in text
    (specs / "churn.yaml").write_text(text + "# reviewed\n")
    again = runner.invoke(main, args)
    assert again.exit_code == 2
    assert json.loads(again.output)["error"]["reason"] == "spec_exists"
    assert (specs / "churn.yaml").read_text().endswith("# reviewed\n")  # untouched
    forced = runner.invoke(main, [*args, "--force"])
    assert forced.exit_code == 0
    assert not (specs / "churn.yaml").read_text().endswith("# reviewed\n")
    ok = runner.invoke(
        main, ["dataset", "validate", "churn", str(SAMPLE), "--specs-dir", str(specs), "--json"]
    )
    assert ok.exit_code == 0
    assert json.loads(ok.output)["rows_checked"] == 400


def test_dataset_init_refuses_a_target_that_is_not_a_column(
    runner: CliRunner, tmp_path: Path
) -> None:
    r = runner.invoke(
        main,
        [
            "dataset",
            "init",
            "churn",
            "--from",
            str(SAMPLE),
            "--target",
            "nope",
            "--specs-dir",
            str(tmp_path),
            "--json",
        ],
    )
    assert r.exit_code == 2
    assert "customer_id" in json.loads(r.output)["error"]["hint"]


def test_dataset_validate_exits_1_with_the_report(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(SAMPLE.read_text().replace(",gold,", ",platinum,", 1))
    r = runner.invoke(main, ["dataset", "validate", "customers", str(bad)])
    assert r.exit_code == 1
    assert "schema_checks_failed" in r.output
    assert "platinum" in r.output


def test_facts_lists_each_rule_with_its_source(runner: CliRunner) -> None:
    r = runner.invoke(main, ["facts", "--cloud", "aws", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["facts"]
    ids = {row["id"] for row in rows}
    assert "aws.lambda.max_timeout_s" in ids
    assert all(row["cloud"] == "aws" and row["source"].startswith("https://") for row in rows)


def test_the_lineage_names_who_storage_authenticated_not_who_the_metadata_claims() -> None:
    from dhow_cli.models import _uploader

    # The metadata is the uploader's own say; the event's principal is storage's.
    spoofed = {
        "uploader": "ceo",
        "uploaded_by": "AWS:AROAEXAMPLE:intern",
        "claimed_uploader": "ceo",
    }
    assert _uploader(spoofed) == "AWS:AROAEXAMPLE:intern (claims ceo)"
    same = {"uploaded_by": "alice", "claimed_uploader": "alice"}
    assert _uploader(same) == "alice"
    # Rows written before uploaded_by existed keep what they had.
    assert _uploader({"uploader": "bob"}) == "bob"
    assert _uploader({"claimed_uploader": "eve"}) == "eve (claimed)"


def test_dataset_validate_names_a_missing_column_and_every_bad_value_at_once(
    runner: CliRunner, tmp_path: Path
) -> None:
    # One upload, one report: before, the missing column was the only thing it named.
    lines = SAMPLE.read_text().splitlines()
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:]]
    rows[3][header.index("age")] = "forty"  # a wrong type
    rows[10][header.index("emirate")] = ""  # a null
    rows[20][header.index("tenure_months")] = "-3"  # out of range
    gone = header.index("segment")
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(",".join(r[:gone] + r[gone + 1 :]) for r in [header, *rows]) + "\n")
    r = runner.invoke(main, ["dataset", "validate", "customers", str(bad), "--json"])
    assert r.exit_code == 1, r.output
    report = json.loads(r.output)
    assert report["reason"] == "missing_columns"
    assert report["missing_columns"] == ["segment"]
    assert {(f["row"], f["column"], f["check"], f["value"]) for f in report["failure_cases"]} == {
        (None, None, "column_in_dataframe", "segment"),
        (4, "age", "coerce_dtype('int64')", "forty"),
        (11, "emirate", "not_nullable", None),
        (21, "tenure_months", "greater_than_or_equal_to(0.0)", "-3"),
    }
    text = runner.invoke(main, ["dataset", "validate", "customers", str(bad)])
    for shown in ("segment", "forty", "not_nullable", "'-3'"):
        assert shown in text.output, shown


@pytest.mark.parametrize(("validation", "retried"), [("failed", True), ("rejected", False)])
def test_upload_again_says_a_new_attempt_runs_only_when_the_last_job_failed(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, validation: str, retried: bool
) -> None:
    """Ingest announces a new upload of bytes whose validation job failed (a platform
    reason) and validate retries it; a rejected file stays rejected. The CLI said
    "nothing new will run" for both."""
    from dhow_cli import app

    from shared.artifacts import sha256_file
    from shared.ports import LineageRecord
    from shared.services.ingest import ingest_record_id
    from shared.services.validate import validate_record_id
    from shared.settings import Settings
    from shared.wiring import Ports
    from tests.helpers import MemoryBus, MemoryLineage, MemoryStore

    sample = Path(__file__).resolve().parents[2] / "localstack/samples/customers.csv"
    sha = sha256_file(sample)
    lineage = MemoryLineage()
    for kind, record_id, status in (
        ("ingest", ingest_record_id(sha), "ingested"),
        ("validate", validate_record_id(sha), validation),
    ):
        lineage.put_if_absent(
            LineageRecord(dataset="customers", record_id=record_id, kind=kind, status=status)
        )
    ports = Ports(store=MemoryStore(), bus=MemoryBus(), lineage=lineage)
    monkeypatch.setattr(app, "resolve_settings", lambda: Settings())
    monkeypatch.setattr("shared.wiring.build_ports", lambda s, t=None: ports)
    r = runner.invoke(main, ["upload", str(sample), "--dataset", "customers"])
    assert ("a new attempt will run" in r.output) is retried, r.output
    assert ("nothing new will run" in r.output) is not retried, r.output
    assert r.exit_code == (0 if retried else 1), r.output


def test_python_m_dhow_cli_runs_with_every_verb_defined() -> None:
    """`python -m dhow_cli` (how the tests run the CLI; it was `python -m shared.cli`):
    `shared/cli.py` ran `main()` from the middle of the module, before the verbs and
    helpers after it existed: `dhow train` failed with NameError: _caller_principal."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "dhow_cli", "--help"],
        cwd=root, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    listed = {line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(main.commands), (listed, set(main.commands))
    source = (root / "localstack/dhow_cli/__main__.py").read_text()
    assert source.rstrip().endswith('if __name__ == "__main__":\n    main()')
