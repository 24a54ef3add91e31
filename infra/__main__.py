"""`pulumi up`: read the stack's configuration once, take its cloud's stack from the
registry (infra/registry.py), check what it needs was built, build it, export."""

import pulumi

from infra import config
from infra.registry import stack_for

cfg = config.load()
stack = stack_for(cfg.cloud)
# Refuses, naming `make layers` or `make azure-package`, before anything is created.
stack.preflight(cfg)
for name, value in stack.build(cfg).items():
    pulumi.export(name, value)
