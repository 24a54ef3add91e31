"""Who runs a command, as the cloud authenticated them, for the audit trail (never a
name the caller chose). How each cloud says so is its kit's
(``CloudKit.caller_principal``)."""

from __future__ import annotations

import getpass
from typing import Any

from shared.clouds import kit_for
from shared.settings import Settings


def caller_principal(
    settings: Settings, *, sts: Any | None = None, credential: Any | None = None
) -> str:
    """Who runs this command, as the cloud authenticated them, for the audit trail:
    the ARN STS GetCallerIdentity returns on AWS (fact aws.sts.get_caller_identity), the
    Entra token's ``oid`` and name on Azure (fact azure.entra.access_token_principal).
    On the local platform nothing authenticates anyone: the OS user, marked ``local:``
    (and ``$DHOW_USER``, a name anyone can set, is never used). ``sts`` and
    ``credential`` stand in for the cloud's own client (tests)."""
    from shared.audit import LOCAL_PREFIX

    if settings.aws_endpoint_url or settings.azure_storage_connection_string:
        return f"{LOCAL_PREFIX}{getpass.getuser()} (unauthenticated)"
    return kit_for(settings).caller_principal(sts if sts is not None else credential)
