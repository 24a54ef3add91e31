"""The cloud's rules as data: every fact about AWS or Azure that Dhow's code relies on.

Each fact lives in one of the YAML tables beside this file (one table per concern,
``aws-*.yaml`` and ``azure-*.yaml``), with the documentation page it comes from. The code
reads the values it needs from here (``value("aws.lambda.ephemeral_storage")``), and
``tests/unit/test_cloud_facts.py`` fails unless every fact is named by at least one test
or policy rule that enforces it, so a fact can be neither forgotten nor left unchecked.
``dhow facts`` prints the table for a reviewer or an auditor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from shared.errors import DhowError
from shared.reasons import Reason

TABLES_DIR = Path(__file__).resolve().parent
_ID = re.compile(r"^(aws|azure)\.[a-z0-9_]+(\.[a-z0-9_]+)+$")
_FIELDS = {"id", "rule", "value", "source"}


class CloudFactError(DhowError):
    """A cloud-facts table is malformed, or code asked for a fact no table holds."""

    reason = Reason.CLOUD_FACT_INVALID


@dataclass(frozen=True)
class CloudFact:
    """One rule of a cloud, as its documentation states it."""

    id: str  # "<cloud>.<service>.<what>"
    rule: str  # the rule in one or two sentences, as the source says it
    value: Any  # what the code uses: a number, a list of names, a mapping
    source: str  # the documentation page (and section) it comes from
    table: str  # the YAML file it is written in

    @property
    def cloud(self) -> Literal["aws", "azure"]:
        return "aws" if self.id.startswith("aws.") else "azure"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cloud": self.cloud,
            "rule": self.rule,
            "value": self.value,
            "source": self.source,
            "table": self.table,
        }


@cache
def facts(directory: Path = TABLES_DIR) -> dict[str, CloudFact]:
    """Every fact of every table, by id; raises ``CloudFactError`` on a malformed table."""
    out: dict[str, CloudFact] = {}
    for path in sorted(directory.glob("*.yaml")):
        rows = yaml.safe_load(path.read_text()) or []
        if not isinstance(rows, list):
            raise CloudFactError(f"{path.name}: a table is a list of facts")
        for row in rows:
            if not isinstance(row, dict) or set(row) != _FIELDS:
                raise CloudFactError(
                    f"{path.name}: each fact has exactly {sorted(_FIELDS)}; got {row!r}"
                )
            fid = str(row["id"])
            if not _ID.match(fid):
                raise CloudFactError(f"{path.name}: id {fid!r} is not <cloud>.<service>.<what>")
            if fid in out:
                raise CloudFactError(f"{path.name}: {fid} is also in {out[fid].table}")
            if not str(row["source"]).startswith("https://"):
                raise CloudFactError(f"{path.name}: {fid} needs its documentation URL as source")
            out[fid] = CloudFact(
                fid, str(row["rule"]).strip(), row["value"], row["source"], path.name
            )
    return out


def fact(fact_id: str) -> CloudFact:
    """The fact ``fact_id``; raises ``CloudFactError`` naming the tables when none has it."""
    table = facts()
    if fact_id not in table:
        raise CloudFactError(
            f"no cloud fact {fact_id!r}",
            hint=f"add it, with its source, to a table in {TABLES_DIR}",
        )
    return table[fact_id]


def value(fact_id: str) -> Any:
    """The machine-readable value of ``fact_id``."""
    return fact(fact_id).value
