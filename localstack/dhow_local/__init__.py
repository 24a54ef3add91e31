"""Dhow's local platform: LocalStack/Azurite processes, topology provisioning, the local runner.

Importing it registers the local kits (``local-aws``, ``local-azure``: dhow_local.kit),
which every process the platform starts does before it builds a port.
"""

from dhow_local import kit as _kit  # noqa: F401  (registers the local kits)
