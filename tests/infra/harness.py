"""The mocked run of the Pulumi program, for the tests: it lives in ``infra/mocked.py`` so
that ``dhow compliance report`` reads the program through the same runner.
``tests/infra/launch.py`` loads this file by path and takes ``RecordingMocks`` from it."""

from __future__ import annotations

from infra.mocked import ACCOUNT, SUBSCRIPTION, Program, Recorded, RecordingMocks, run

__all__ = ["ACCOUNT", "SUBSCRIPTION", "Program", "Recorded", "RecordingMocks", "run"]
