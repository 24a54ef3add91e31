"""CLI error paths: clear messages, JSON on request, non-zero exits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shared.cli import main


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
