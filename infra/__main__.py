"""`pulumi up`: read the stack's configuration once, build the stack of its cloud, export."""

import importlib

import pulumi

from infra import config
from infra.code_bundle import missing_layers

cfg = config.load()
if cfg.cloud == "aws" and (missing := missing_layers(cfg)):
    raise config.StackConfigError(
        f"{', '.join(map(str, missing))} not built: run `make layers` first "
        f"(it builds the {cfg.arch} layers from PyPI and checks them against Lambda's limits)"
    )
if cfg.cloud == "azure":
    from infra.azure.app_package import package_path, require_package

    # Refuses, naming `make azure-package`, before anything is created.
    require_package(package_path(cfg))
stack = importlib.import_module(f"infra.{cfg.cloud}.stack")
for name, value in stack.build(cfg).items():
    pulumi.export(name, value)
