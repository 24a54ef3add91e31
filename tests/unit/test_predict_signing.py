"""`dhow predict --url` against the cloud: the request is signed as API Gateway's IAM
authorization checks it (SigV4 for execute-api, in the API's region), to the exported
serve URL's /predict."""

from __future__ import annotations

import re

import pytest

from shared.cli import _predict_url, _signed_headers
from shared.cloud_facts import value

URL = "https://a1b2c3d4e5.execute-api.me-central-1.amazonaws.com"


@pytest.fixture(autouse=True)
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def test_the_exported_url_is_called_on_predict_and_signed() -> None:
    assert _predict_url("customers", URL) == (f"{URL}/predict", True)
    assert _predict_url("customers", f"{URL}/predict/") == (f"{URL}/predict", True)


def test_requests_are_signed_for_execute_api_in_the_region() -> None:
    headers = _signed_headers(f"{URL}/predict", b"[]", "me-central-1")
    scope = re.search(
        r"Credential=AKIDEXAMPLE/\d{8}/([^/]+)/([^/]+)/aws4_request", headers["Authorization"]
    )
    assert scope is not None, headers["Authorization"]
    assert scope.groups() == ("me-central-1", value("aws.apigateway.iam_signing_service"))
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")
    assert "host" in headers["Authorization"].split("SignedHeaders=")[1]
    assert "X-Amz-Date" in headers
