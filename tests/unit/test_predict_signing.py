"""`dhow predict --url` against the cloud, authorised as each cloud's serve route checks it:
- the AWS serve API (API Gateway, AWS_IAM authorization): SigV4 for execute-api, in the
  API's region, to the exported serve URL's /predict;
- an Azure ML online endpoint (auth mode AADToken): a Microsoft Entra token for the
  ml.azure.com audience as ``Authorization: Bearer``, to its scoring URI (/score).
Which one is decided by the URL's host; no request leaves the machine here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx2
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from click.testing import CliRunner
from dhow_cli import main
from dhow_cli.predict import _entra_headers, _predict_url, _serve_auth, _signed_headers

from shared.cloud_facts import value
from shared.errors import DhowError

URL = "https://a1b2c3d4e5.execute-api.me-central-1.amazonaws.com"
SCORING = "https://dhow-prod-customers.uaenorth.inference.ml.azure.com/score"
SAMPLE = Path(__file__).resolve().parents[2] / "localstack" / "samples" / "customers.csv"


@pytest.fixture(autouse=True)
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


class RecordingCredential:
    """A TokenCredential that hands out a fixed token and records the scopes asked for."""

    def __init__(self, fail: bool = False) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self.fail = fail

    def get_token(self, *scopes: str, **_kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        if self.fail:
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")
        return AccessToken("entra-token-for-test", 4_102_444_800)


def test_the_exported_url_is_called_on_predict_and_signed() -> None:
    assert _predict_url("customers", URL) == (f"{URL}/predict", "sigv4")
    assert _predict_url("customers", f"{URL}/predict/") == (f"{URL}/predict", "sigv4")


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


def test_an_online_endpoints_scoring_uri_takes_an_entra_token_on_score() -> None:
    rule = value("azure.serving.scoring_uri_host")
    assert _predict_url("customers", SCORING) == (SCORING, "entra")
    # The endpoint's host alone is completed with the scoring path, not /predict.
    host = SCORING.removesuffix(rule["path"])
    assert _predict_url("customers", host + "/") == (SCORING, "entra")


def test_a_token_is_never_sent_to_a_host_that_only_looks_like_an_endpoint() -> None:
    # The suffix must end the host: anything else is not Azure ML's and gets no token.
    assert _serve_auth("https://x.uaenorth.inference.ml.azure.com.example.net/score") == "sigv4"
    with pytest.raises(DhowError) as err:
        _serve_auth("https://inference.ml.azure.com.inference.ml.azure.com/score")
    assert err.value.reason == "bad_serve_url"


def test_the_entra_token_is_asked_for_the_ml_audience_and_sent_as_bearer() -> None:
    rule = value("azure.serving.scoring_token_audience")
    credential = RecordingCredential()
    headers = _entra_headers(credential)
    assert credential.scopes == [(rule["scope"],)]
    # A /.default scope names its resource: the audience the token's aud must carry.
    assert rule["scope"] == f"{rule['audience']}/.default"
    assert headers["Authorization"] == "Bearer entra-token-for-test"


def test_no_token_is_a_typed_error_that_says_to_log_in() -> None:
    with pytest.raises(DhowError) as err:
        _entra_headers(RecordingCredential(fail=True))
    assert err.value.reason == "no_credentials"
    assert "az login" in (err.value.hint or "")


def _predict_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str
) -> list[httpx2.Request]:
    """`dhow predict customers <sample> --url <url>` with the HTTP client's transport and
    the Azure credential replaced: the requests it would have sent."""
    seen: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        n = len(json.loads(request.content))
        return httpx2.Response(200, json={"predictions": [0] * n, "model_version": "3"})

    real_client = httpx2.Client

    def client(*args: Any, **kwargs: Any) -> httpx2.Client:
        return real_client(*args, **{**kwargs, "transport": httpx2.MockTransport(answer)})

    import azure.identity

    monkeypatch.setattr(httpx2, "Client", client)
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", RecordingCredential)
    monkeypatch.setenv("DHOW_LOCAL_HOME", str(tmp_path))
    result = CliRunner().invoke(
        main,
        ["predict", "customers", str(SAMPLE), "--url", url, "--limit", "40", "--batch-rows", "20"],
    )
    assert result.exit_code == 0, result.output
    return seen


def test_predict_sends_the_bearer_token_to_the_scoring_uri(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = _predict_through(monkeypatch, tmp_path, SCORING)
    assert [str(r.url) for r in seen] == [SCORING, SCORING]
    assert {r.headers["authorization"] for r in seen} == {"Bearer entra-token-for-test"}
    assert not any("x-amz-date" in r.headers for r in seen)


def test_predict_signs_the_execute_api_url_with_sigv4(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = _predict_through(monkeypatch, tmp_path, URL)
    assert [str(r.url) for r in seen] == [f"{URL}/predict"] * 2
    assert all(r.headers["authorization"].startswith("AWS4-HMAC-SHA256 ") for r in seen)
