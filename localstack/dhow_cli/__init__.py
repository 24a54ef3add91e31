"""`dhow`: the command line. Every verb takes --json; failures exit non-zero (the codes
are in ``dhow_cli.app``).

The CLI is its own package, next to ``dhow_local`` and outside ``shared``, because
neither is shipped to a cloud function: a function's bundle is ``shared`` and
``functions`` only (infra/code_bundle.py), and nothing in ``shared`` imports the CLI
(tests/unit/test_layering.py).

One module per verb group; each defines its click commands, and this module registers
them on the one group, ``main``. To add a verb group: a module here, and one line in
``COMMANDS``. Verbs import what they need inside their function: pandas, pandera and the
cloud SDKs take seconds to import, which `dhow --help` should not pay.
"""

from __future__ import annotations

import click

from dhow_cli import (
    audit,
    compliance,
    datasets,
    drift,
    facts,
    local,
    models,
    predict,
    rollouts,
    training,
)
from dhow_cli.app import main

# Every command `dhow` has, in the order they are written here (click lists them sorted).
COMMANDS: tuple[click.Command, ...] = (
    local.local,
    datasets.upload,
    datasets.dataset,
    models.lineage,
    models.models,
    training.train,
    facts.facts_cmd,
    predict.predict,
    rollouts.deploy,
    audit.audit,
    compliance.compliance,
    drift.captures,
    drift.drift,
)
for _command in COMMANDS:
    main.add_command(_command)

__all__ = ["COMMANDS", "main"]
