"""`python -m dhow_local runner|router`: the processes `dhow local up` starts (the runner
plays Lambda on AWS and the Functions host on Azure, by the kit ``DHOW_KIT`` names)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from dhow_local.kit import local_kit
from dhow_local.platform import local_home
from dhow_local.processes import MARKER_PROCESS
from shared.clouds import kit_name
from shared.settings import Settings
from shared.topology import build_topology


def main(argv: list[str]) -> int:
    if argv[1:] not in (["runner"], ["router"]):
        print("usage: python -m dhow_local runner|router", file=sys.stderr)
        return 2
    # /proc keeps the marker `spawn` set, for `dhow local down`; what this process starts
    # (training jobs, in sessions of their own) must not carry it, or they would be taken
    # for the runner itself.
    os.environ.pop(MARKER_PROCESS, None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")
    # The Azure SDK logs every HTTP request at INFO; the functions' own lines are what matter.
    logging.getLogger("azure").setLevel(logging.WARNING)
    settings = Settings.from_env()
    if argv[1] == "router":
        import uvicorn

        from dhow_local.platform import ROUTER_PORT
        from dhow_local.router import build_router

        # uvicorn stops cleanly on SIGTERM; the router's lifespan flushes the captures.
        uvicorn.run(build_router(settings), host="127.0.0.1", port=ROUTER_PORT, log_level="warning")
        return 0
    runner = local_kit(settings).runner(build_topology(settings.stage), local_home())

    def _stop(signum: int, frame: FrameType | None) -> None:
        runner.stop(timeout=0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logging.info("runner (%s) polling %s", kit_name(settings), ", ".join(runner.polled()))
    # Handlers are imported: tell `dhow local up` it may return.
    ready = os.environ.get("DHOW_RUNNER_READY_FILE")
    if ready:
        Path(ready).write_text(str(os.getpid()))
    runner.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
