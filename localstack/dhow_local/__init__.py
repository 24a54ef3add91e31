"""Dhow's local platform: LocalStack/Azurite processes, topology provisioning, the local runner."""
