"""deploy: ``ModelApproved``, the serving platform's end-of-deployment events and a
rollback policy's ``DriftDetected`` in; a rollout started, judged or rolled back.

The one place the function's work is done: its AWS (``aws_lambda``) and Azure
(``azure_function``) entry points only take the message body out of their trigger.
Built once per cold start; a non-UAE region stops the function here.
"""

from __future__ import annotations

import logging

from shared.events import DriftDetected, ModelApproved
from shared.ports import DeploymentStateChange
from shared.services.deploy import DeployService
from shared.settings import Settings
from shared.triggers import RolloutCheckDue, RouteTable, TriggerContext, drift_policy
from shared.wiring import build_deploy_service, serve_prefix

logging.getLogger().setLevel(logging.INFO)

SETTINGS = Settings.from_env()
SERVICE = build_deploy_service(SETTINGS)
# A deployment state change that is not an end (START, UPDATING), or not of a Dhow serve
# target, reads as no event: the message is done with.
ROUTES = (
    RouteTable[DeployService]("deploy", TriggerContext(serve_prefix=serve_prefix(SETTINGS)))
    .on(ModelApproved, lambda svc, event: svc.on_model_approved(event))
    .on(DriftDetected, lambda svc, event: svc.on_drift(event), **drift_policy("rollback"))
    .on(DeploymentStateChange, lambda svc, change: svc.on_state_change(change))
    # A check the Azure deployer sent itself, now due.
    .on(RolloutCheckDue, lambda svc, due: svc.on_rollout_check(due.dataset, due.deployment_id))
)


def handle(body: str | bytes) -> None:
    ROUTES.run(body, SERVICE)
