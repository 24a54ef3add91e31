"""Identifiers that travel from an uploader into the pipeline's own commands and names.

An upload's id (blob or object metadata the uploader sets) becomes the correlation id
of every event of its run, and from there an argument of the managed validation job's
command line. It is accepted only in a form that no shell, URL or path can read as
anything but one plain word.
"""

from __future__ import annotations

import re

from shared.errors import DhowError

CORRELATION_ID_RULE = "1-128 characters, each a letter A-Z or a-z, a digit 0-9 or '-'"
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9-]{1,128}$")


class InvalidIdentifier(DhowError):
    """An id set by a caller does not follow its rule; nothing was done with it."""

    reason = "identifier_invalid"


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
