"""Identifiers that travel from an uploader into the pipeline's own commands and names.

An upload's id (blob or object metadata the uploader sets) becomes the correlation id
of every event of its run, and from there an argument of the managed validation job's
command line. It is accepted only in a form that no shell, URL or path can read as
anything but one plain word.
"""

from __future__ import annotations

import hashlib
import re

from shared.cloud_facts import value
from shared.errors import DhowError
from shared.reasons import Reason

CORRELATION_ID_RULE = "1-128 characters, each a letter A-Z or a-z, a digit 0-9 or '-'"
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9-]{1,128}$")


class InvalidIdentifier(DhowError):
    """An id set by a caller does not follow its rule; nothing was done with it."""

    reason = Reason.IDENTIFIER_INVALID


def is_correlation_id(value: str) -> bool:
    return bool(_CORRELATION_ID.match(value))


def checked_correlation_id(value: str | None, *, source: str = "correlation id") -> str | None:
    """``value`` unchanged when it follows the rule, or is absent (None or empty: the
    caller picks its own id then); else raises ``InvalidIdentifier`` naming the rule,
    without echoing more of the value than needed."""
    if not value or is_correlation_id(value):
        return value
    raise InvalidIdentifier(
        f"{source} {value[:64]!r} is refused: it must be {CORRELATION_ID_RULE}",
        hint="upload again with an id of that form (`dhow upload` makes one), or none",
    )


# --- the stage's names ---------------------------------------------------------------


def stage_prefix(stage: str) -> str:
    """``dhow-<stage>``: how every name of a stage's resources starts (buckets, queues,
    functions, roles, Azure resource groups ...), built here and nowhere else."""
    return f"dhow-{stage}"


def stage_name(stage: str, *parts: str) -> str:
    """``dhow-<stage>-<part>-...``: the name of one of the stage's resources."""
    return "-".join((stage_prefix(stage), *parts))


def sagemaker_role_name(stage: str) -> str:
    """The role SageMaker's training and processing jobs run as: ``dhow-<stage>-sagemaker``."""
    return stage_name(stage, "sagemaker")


def scheduler_role_name(stage: str) -> str:
    """The role EventBridge Scheduler sends the drift checks' messages with:
    ``dhow-<stage>-scheduler``, the stack's and the local platform's schedules alike."""
    return stage_name(stage, "scheduler")


# --- the stage's share of names matched by a wildcard ---------------------------------

# What no stage name holds (shared.settings.STAGE_RE: no "--", no trailing "-"), so the
# text before it names exactly one stage.
STAGE_SEPARATOR = "--"


def family_prefix(stage: str) -> str:
    """``dhow-<stage>--``: how every name starts that a policy, a rule or a reader finds
    by a prefix (``training-job/<this>*``, ``{"prefix": ...}``): training, processing and
    endpoint jobs, model packages and their groups, serve functions and their alarms.

    IAM's ``*`` matches any characters, ``-`` included (fact ``aws.iam.arn_wildcards``),
    so ``dhow-acme-*`` also matched ``dhow-acme-prod-...``: stage acme's roles could
    approve acme-prod's models. A stage never holds ``--`` nor ends with ``-``, so the
    names of one stage start with this and those of every other stage do not."""
    return f"{stage_prefix(stage)}{STAGE_SEPARATOR}"


def family_head(stage: str) -> str:
    """The ``name_prefix`` the adapters take, ``dhow-<stage>-``: they join it to the rest
    with ``-`` (``<prefix>-serve-<dataset>``), so what they make starts ``family_prefix``."""
    return family_prefix(stage)[:-1]


def serve_prefix(stage: str) -> str:
    """Serve functions, deployment groups, endpoints and their alarms are
    ``<this><dataset>`` (``dhow-<stage>--serve-``: codedeploy.serve_function_name of the
    ``family_head``)."""
    return f"{family_prefix(stage)}serve-"


# --- names of SageMaker resources ----------------------------------------------------

SAGEMAKER_NAME = "aws.sagemaker.resource_name"
_SAGEMAKER_PART = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9])*$")


def name_digest(text: str, chars: int) -> str:
    """The first ``chars`` hex digits of the SHA-256 of ``text``: what keeps two names
    apart once they have been shortened to fit a limit."""
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def sagemaker_name(
    head: str, body: str, tail: str, *, limit: int | None = None, tail_digests_body: bool = False
) -> str:
    """``<head>-<body>-<tail>``, a valid SageMaker resource name of at most ``limit``
    characters (SageMaker's own limit by default, fact ``aws.sagemaker.resource_name``).

    ``head`` (the stage's prefix) and ``tail`` (a version, a hash) are kept whole. A
    ``body`` (a dataset name) that fits and is made of the characters SageMaker allows is
    kept as it is, so the names of short datasets do not change. Any other is shortened,
    its ``_`` (which a dataset may hold and SageMaker refuses) spelled ``-``, and followed
    by a digest of the whole body: two long names sharing a prefix, or ``a_b`` and
    ``a-b``, never end as one name. A ``tail`` that is itself a digest of the body
    (``tail_digests_body``) already does that, and no second digest is added.
    """
    rule = value(SAGEMAKER_NAME)
    limit = rule["max_length"] if limit is None else limit
    whole = f"{head}-{body}-{tail}"
    if len(whole) <= limit and _SAGEMAKER_PART.match(body):
        return whole
    digest = "" if tail_digests_body else f"{name_digest(body, rule['digest_chars'])}-"
    room = limit - len(head) - len(tail) - len(digest) - 2
    if room < 1:
        raise InvalidIdentifier(
            f"no room for {body[:64]!r} in a SageMaker name of {limit} characters "
            f"after {head!r} and {tail!r}",
            hint="use a shorter stage name",
        )
    short = re.sub(r"[^A-Za-z0-9-]", "-", body)[:room].strip("-") or "x"
    return f"{head}-{short}-{digest}{tail}"
