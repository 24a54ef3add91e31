"""`dhow predict`: rows to a dataset's serve function, authorised as its cloud wants
(SigV4 for the AWS serve API, an Entra token for an Azure ML online endpoint, nothing
for the local router)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

import click

from dhow_cli import app
from dhow_cli.datasets import read_sample
from shared.adapters.azure_identity import entra_token
from shared.errors import DhowError
from shared.reasons import Reason

ServeAuth = Literal["none", "sigv4", "entra"]


def _serve_auth(url: str) -> ServeAuth:
    """How a serve URL is authorised, by its host: an Azure ML online endpoint's scoring
    URI (``<endpoint>.<region>.inference.ml.azure.com``) takes an Entra token; anything
    else is the AWS serve API (API Gateway with IAM auth), signed with SigV4."""
    import re
    from urllib.parse import urlsplit

    from shared.cloud_facts import value

    host = (urlsplit(url).hostname or "").lower()
    rule = value("azure.serving.scoring_uri_host")
    if host.endswith(rule["host_suffix"]):
        if not re.match(rule["host_pattern"], host):
            raise DhowError(
                f"{host} is not an online endpoint's scoring host",
                hint="pass the endpoint's scoring URI, the stack's serve_urls output "
                "(https://<endpoint>.<region>.inference.ml.azure.com/score)",
                reason=Reason.BAD_SERVE_URL,
            )
        return "entra"
    return "sigv4"


def _predict_url(dataset: str, url: str | None) -> tuple[str, ServeAuth]:
    """(the predict URL, how to authorise it)."""
    if url:
        auth = _serve_auth(url)
        base = url.rstrip("/")
        if auth == "entra":
            # The inference server answers on /score only (azure.serving.scoring_uri_host).
            from shared.cloud_facts import value

            path = value("azure.serving.scoring_uri_host")["path"]
            return base if base.endswith(path) else base + path, auth
        return base + ("" if base.endswith("/predict") else "/predict"), auth
    from dhow_local.platform import ROUTER_URL, PlatformState

    if PlatformState.load().endpoint is None:
        raise DhowError(
            "no --url given and the local platform is not up",
            hint="pass the serve API's URL (the stack exports it per dataset as serve_urls), "
            "or start the local platform with `dhow local up`",
            reason=Reason.NO_SERVE_URL,
        )
    return f"{ROUTER_URL}/datasets/{dataset}/predict", "none"


def _entra_headers(credential: Any | None = None) -> dict[str, str]:
    """An online endpoint's (AADToken) headers: a Microsoft Entra token for the
    ml.azure.com audience, from ``credential`` (DefaultAzureCredential when None: az
    login, a managed identity, the environment's service principal)."""
    from shared.cloud_facts import value

    rule = value("azure.serving.scoring_token_audience")
    token = entra_token(
        credential,
        rule["scope"],
        f" for {rule['audience']}",
        hint="the endpoint takes Entra tokens; log in (az login) with an identity that "
        "holds the endpoint's score action",
    )
    return {
        "content-type": "application/json",
        rule["header"]: f"{rule['scheme']} {token}",
    }


def _signed_headers(url: str, body: bytes, region: str) -> dict[str, str]:
    """SigV4 headers for the serve API (API Gateway, a route with AWS_IAM authorization:
    signed for execute-api, not lambda)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.session import get_session

    from shared.cloud_facts import value

    # Only the credentials: no client is made here (clients come from aws_client).
    credentials = get_session().get_credentials()
    if credentials is None:
        raise DhowError(
            "no AWS credentials to sign the request with",
            hint="the serve API uses IAM auth; log in (aws sso login) first",
            reason=Reason.NO_CREDENTIALS,
        )
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"content-type": "application/json"}
    )
    SigV4Auth(credentials, value("aws.apigateway.iam_signing_service"), region).add_auth(request)
    return dict(request.headers.items())


@click.command("predict")
@click.argument("dataset")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--url", help="The serve API's URL, the stack's serve_urls output (default: the local router)."
)
@click.option("--batch-rows", default=100, show_default=True, help="Rows per request.")
@click.option("--limit", type=int, help="Predict the first N rows only.")
@app.json_option
def predict(
    dataset: str, file: Path, url: str | None, batch_rows: int, limit: int | None, as_json: bool
) -> None:
    """Send FILE's rows (CSV, Parquet, JSON Lines) to DATASET's serve function in batches;
    the target column, if present, is left out. Exit 1 if any request failed."""
    import httpx2 as httpx

    with app.cli_errors(as_json, "cannot reach the serve function"):
        settings = app.resolve_settings()
        target_url, auth = _predict_url(dataset, url)
        # One token for the whole run (an Entra token lasts an hour or more); SigV4 signs
        # each body.
        entra = _entra_headers() if auth == "entra" else None
        frame = read_sample(file)
        from shared.specs import load_spec

        spec = load_spec(dataset, settings.specs_dir)
        frame = frame.drop(columns=[spec.target], errors="ignore")
        if limit is not None:
            frame = frame.head(limit)
        rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
        predictions: list[Any] = []
        versions: dict[str, int] = {}
        failures: list[dict[str, Any]] = []
        t0 = time.monotonic()
        batches = range(0, len(rows), max(1, batch_rows))
        with httpx.Client(timeout=60.0) as client:
            for n, start in enumerate(batches, 1):
                chunk = rows[start : start + batch_rows]
                body = json.dumps(chunk).encode()
                if auth == "sigv4":
                    headers = _signed_headers(target_url, body, settings.aws_region)
                else:
                    headers = entra or {"content-type": "application/json"}
                r = client.post(target_url, content=body, headers=headers)
                if r.status_code == 200:
                    answer = r.json()
                    predictions.extend(answer["predictions"])
                    v = answer["model_version"]
                    versions[v] = versions.get(v, 0) + len(chunk)
                else:
                    predictions.extend([None] * len(chunk))
                    try:
                        detail: Any = r.json()
                    except ValueError:
                        detail = r.text[:500]
                    failures.append(
                        {
                            "rows": [start, start + len(chunk)],
                            "status": r.status_code,
                            "detail": detail,
                        }
                    )
                if not as_json and len(batches) > 10 and n % 10 == 0:
                    click.echo(f"  {n}/{len(batches)} requests ...", err=True)
        seconds = round(time.monotonic() - t0, 3)

    def text() -> None:
        by = ", ".join(f"v{v}: {k} rows" for v, k in sorted(versions.items()))
        click.echo(
            f"{len(rows)} rows in {len(batches)} request(s), {seconds}s; served by {by or 'none'}"
        )
        for i, p in enumerate(predictions[:5]):
            click.echo(f"  row {i + 1}: {p}")
        if len(predictions) > 5:
            click.echo(f"  ... {len(predictions) - 5} more (--json for all)")
        for f in failures:
            click.secho(
                f"  rows {f['rows'][0] + 1}-{f['rows'][1]}: HTTP {f['status']} "
                + json.dumps(f["detail"])[:300],
                fg="red",
            )

    app.emit(
        as_json,
        {
            "ok": not failures,
            "dataset": dataset,
            "url": target_url,
            "rows": len(rows),
            "seconds": seconds,
            "served_by": versions,
            "predictions": predictions,
            "failures": failures,
        },
        text,
    )
    if failures:
        sys.exit(app.EXIT_REJECTED)
