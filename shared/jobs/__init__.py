"""Entry points of managed jobs: the same services, run outside a function's limits."""
