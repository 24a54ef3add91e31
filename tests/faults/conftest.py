"""The fault and hostile-input suite: one ledger for the session, its figures printed at the end."""

from __future__ import annotations

import pytest

from tests.faults.ledger import REPORT, Ledger

_LEDGER = Ledger()


@pytest.fixture
def ledger() -> Ledger:
    return _LEDGER


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not (_LEDGER.faults or _LEDGER.actions or _LEDGER.hostile or _LEDGER.messages):
        return
    f = _LEDGER.write()
    answers = ", ".join(f"{k} {v}" for k, v in sorted(f["answers"].items()))
    terminalreporter.write_sep("-", "fault and hostile-input suite")
    terminalreporter.write_line(f"faults injected: {f['faults_injected']}")
    terminalreporter.write_line(
        f"actions completed exactly once: {f['actions_exactly_once']} of {f['actions']}"
    )
    terminalreporter.write_line(f"hostile inputs tried: {f['hostile_inputs']} ({answers})")
    terminalreporter.write_line(f"messages lost: {f['messages_lost']} of {f['messages_sent']} sent")
    terminalreporter.write_line(f"details: {REPORT}")
