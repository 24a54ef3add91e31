"""Thin entry points, one per function and cloud."""
