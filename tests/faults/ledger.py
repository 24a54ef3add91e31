"""The fault and hostile-input suite's figures, tallied from what its tests observe.

Each test in ``tests/faults/`` records what it did and what it saw through the
``ledger`` fixture; the session prints the totals and writes them to
``.cache/faults/report.json``. The figures are the observed values, never the
expected ones: a test asserts its outcome after recording it, so a failing test
still shows what happened.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT = Path(__file__).resolve().parents[2] / ".cache" / "faults" / "report.json"


@dataclass
class Ledger:
    faults: list[dict[str, str]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    hostile: list[dict[str, str]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def fault(self, where: str, what: str) -> None:
        """A fault injected: ``where`` (e.g. ``ingest:after-claim``), ``what`` (e.g. crash)."""
        self.faults.append({"where": where, "what": what})

    def action(self, name: str, times: int) -> None:
        """An action the pipeline took, and how many times it was observed to happen."""
        self.actions.append({"name": name, "times": times})

    def answer(self, hostile_input: str, answer: str) -> None:
        """A hostile input tried, and the answer it got (a reason code or HTTP status)."""
        self.hostile.append({"input": hostile_input, "answer": answer})

    def delivered(self, what: str, sent: int, accounted: int) -> None:
        """Messages sent, and how many ended somewhere (done, rejected or dead-lettered)."""
        self.messages.append({"what": what, "sent": sent, "accounted": accounted})

    def figures(self) -> dict[str, Any]:
        return {
            "faults_injected": len(self.faults),
            "actions": len(self.actions),
            "actions_exactly_once": sum(1 for a in self.actions if a["times"] == 1),
            "hostile_inputs": len(self.hostile),
            "answers": dict(Counter(h["answer"] for h in self.hostile)),
            "messages_sent": sum(m["sent"] for m in self.messages),
            "messages_lost": sum(max(0, m["sent"] - m["accounted"]) for m in self.messages),
        }

    def write(self) -> dict[str, Any]:
        figures = self.figures()
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(
            json.dumps(
                {
                    "figures": figures,
                    "faults": self.faults,
                    "actions": self.actions,
                    "hostile": self.hostile,
                    "messages": self.messages,
                },
                indent=2,
            )
        )
        return figures
