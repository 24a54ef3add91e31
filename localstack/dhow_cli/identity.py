"""Who runs a command, as the cloud authenticated them, for the audit trail (never a
name the caller chose), and the Microsoft Entra tokens that prove it."""

from __future__ import annotations

import getpass
import json
from typing import Any

from shared.errors import DhowError
from shared.reasons import Reason
from shared.settings import Settings


def entra_token(credential: Any | None, scope: str, audience: str, hint: str) -> str:
    """A Microsoft Entra token for ``scope`` from ``credential`` (DefaultAzureCredential
    when None: az login, a managed identity, the environment's service principal), or a
    ``no_credentials`` error saying what to do."""
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    try:
        return str(credential.get_token(scope).token)
    except Exception as exc:  # azure-identity's ClientAuthenticationError and kin
        raise DhowError(
            f"no Microsoft Entra token{audience}: {exc}".splitlines()[0],
            hint=hint,
            reason=Reason.NO_CREDENTIALS,
        ) from exc


def _jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: the token came from Entra over TLS to this
    process, and only its claims about the caller are read, never trusted by a server."""
    import base64

    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise DhowError(
            "the Microsoft Entra token is not a JWT", reason=Reason.NO_CREDENTIALS
        ) from exc
    return claims if isinstance(claims, dict) else {}


def caller_principal(
    settings: Settings, *, sts: Any | None = None, credential: Any | None = None
) -> str:
    """Who runs this command, as the cloud authenticated them, for the audit trail:
    the ARN STS GetCallerIdentity returns on AWS (fact aws.sts.get_caller_identity), the
    Entra token's ``oid`` and name on Azure (fact azure.entra.access_token_principal).
    On the local platform nothing authenticates anyone: the OS user, marked ``local:``
    (and ``$DHOW_USER``, a name anyone can set, is never used)."""
    from shared.audit import ENTRA_PREFIX, LOCAL_PREFIX

    if settings.aws_endpoint_url or settings.azure_storage_connection_string:
        return f"{LOCAL_PREFIX}{getpass.getuser()} (unauthenticated)"
    if settings.cloud == "aws":
        if sts is None:
            from shared.adapters.aws import aws_client

            # The region-pinned factory: STS answers at me-central-1's regional endpoint.
            sts = aws_client("sts", settings)
        try:
            return str(sts.get_caller_identity()["Arn"])
        except Exception as exc:  # botocore's NoCredentialsError, ClientError and kin
            raise DhowError(
                f"AWS does not say who you are: {exc}".splitlines()[0],
                hint="log in (aws sso login, or set a profile): actions are recorded "
                "under the identity AWS authenticates",
                reason=Reason.NO_CREDENTIALS,
            ) from exc
    token = entra_token(
        credential,
        "https://storage.azure.com/.default",
        "",
        hint="log in (az login): actions are recorded under the identity Entra authenticates",
    )
    claims = _jwt_claims(token)
    oid = claims.get("oid")
    if not oid:
        raise DhowError(
            "the Microsoft Entra token names no object id (oid)",
            hint="log in as a user or a service principal of the tenant",
            reason=Reason.NO_CREDENTIALS,
        )
    name = next(
        (
            claims[k]
            for k in ("upn", "unique_name", "preferred_username", "appid", "azp")
            if claims.get(k)
        ),
        "",
    )
    return f"{ENTRA_PREFIX}{name} oid={oid}" if name else f"{ENTRA_PREFIX}oid={oid}"
