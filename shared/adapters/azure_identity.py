"""Microsoft Entra: the tokens that prove who runs a command, and who a token names.

Imported only where Azure is the cloud (the Azure kit, the CLI's Azure ML scorer call):
``azure.identity`` is loaded inside ``entra_token``, when no credential is given."""

from __future__ import annotations

import base64
import json
from typing import Any

from shared.errors import DhowError
from shared.reasons import Reason


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
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise DhowError(
            "the Microsoft Entra token is not a JWT", reason=Reason.NO_CREDENTIALS
        ) from exc
    return claims if isinstance(claims, dict) else {}


def entra_principal(credential: Any | None, prefix: str) -> str:
    """Who ``credential`` (DefaultAzureCredential when None) is, as Entra authenticated
    them: ``<prefix><name> oid=<object id>`` from a storage token's claims (fact
    azure.entra.access_token_principal); the oid is the identity, the name a reading aid."""
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
    return f"{prefix}{name} oid={oid}" if name else f"{prefix}oid={oid}"
