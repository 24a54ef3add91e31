"""The Azure Functions app (Python v2 programming model), generated from the topology.

Every function of the topology gets its entry point here, bound the way the Pulumi
program wires it: a Storage queue trigger on its queue for the pipeline's functions,
an HTTP route for serve, a timer that sends due drift checks to the drift queue, and
one that sends validate its hourly sweep of validation jobs whose end never came.
Each binding imports its entry point on first use, so a cold start pays only for the
function that runs. Deployed at the root of the app package (with ``host.json``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func

from shared.constants import STAGE
from shared.topology import Function, build_topology

# The data account's queue service, where the stack creates the queues and Event Grid
# delivers: an identity-based connection (``DhowQueues__queueServiceUri``, set by
# infra/azure/stack.py). Not AzureWebJobsStorage: that is the host's own account.
CONNECTION = "DhowQueues"
# Each minute: the timer sends only the checks whose drift.schedule is due, each at most
# once per period of that schedule (shared.triggers.claim_drift_period), so a check that
# keeps failing is retried by the queue and poisoned, not re-sent every minute.
DRIFT_TIMER = "0 * * * * *"
# Each hour (the shipped specs' drift.schedule, at which AWS's validate_sweep schedules
# run): a sweep of the validation jobs whose end event never came, per dataset.
VALIDATE_SWEEP_TIMER = "0 0 * * * *"

TOPOLOGY = build_topology(os.environ.get(STAGE, "local"))
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _entry(path: str) -> Callable[..., Any]:
    module, _, attr = path.rpartition(".")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return fn


def _queue_function(fn: Function) -> None:
    assert fn.trigger_queue is not None

    def run(msg: func.QueueMessage) -> None:
        _entry(fn.azure_handler)(msg)

    run.__name__ = fn.logical
    app.function_name(fn.name)(
        app.queue_trigger(
            arg_name="msg", queue_name=TOPOLOGY.queue(fn.trigger_queue).name, connection=CONNECTION
        )(run)
    )


for _fn in TOPOLOGY.functions:
    if _fn.trigger_queue is not None:
        _queue_function(_fn)


@app.function_name(f"{TOPOLOGY.function('serve').name}")
@app.route(route="datasets/{dataset}/{*path}", methods=["GET", "POST"])
async def serve(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    main: Callable[..., Awaitable[func.HttpResponse]] = _entry(
        TOPOLOGY.function("serve").azure_handler
    )
    return await main(req, context)


@app.function_name(f"{TOPOLOGY.function('drift_check').name}-timer")
@app.timer_trigger(arg_name="timer", schedule=DRIFT_TIMER)
@app.queue_output(
    arg_name="requests",
    queue_name=TOPOLOGY.queue(TOPOLOGY.schedule("drift_check").target_queue).name,
    connection=CONNECTION,
)
def drift_timer(timer: func.TimerRequest, requests: func.Out[list[str]]) -> None:
    _entry("functions.drift_check.azure_function.on_timer")(timer, requests)


@app.function_name(f"{TOPOLOGY.function('validate').name}-sweep-timer")
@app.timer_trigger(arg_name="timer", schedule=VALIDATE_SWEEP_TIMER)
@app.queue_output(
    arg_name="requests",
    queue_name=TOPOLOGY.queue(TOPOLOGY.schedule("validate_sweep").target_queue).name,
    connection=CONNECTION,
)
def validate_sweep_timer(timer: func.TimerRequest, requests: func.Out[list[str]]) -> None:
    _entry("functions.validate.azure_function.on_timer")(timer, requests)
