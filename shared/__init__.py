"""Dhow's cloud-agnostic core: settings, event contracts, ports, adapters and services."""

__version__ = "0.1.0"
