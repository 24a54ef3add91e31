"""Lambda entry point of serve: the dataset's FastAPI app behind mangum, reached through
an API Gateway HTTP API with IAM auth. One function per dataset spec; each published version
serves the model version its ``DHOW_SERVE_MODEL_VERSION`` names."""

from __future__ import annotations

import logging

from mangum import Mangum

from shared.capture import flushed_after_each_call
from shared.settings import Settings
from shared.wiring import build_serve_app

logging.getLogger().setLevel(logging.INFO)

# Built once per cold start: the app now, the model on its first request (then kept
# for the life of the warm container). Not at init: an on-demand function's init phase
# is limited (fact aws.lambda.init_phase_limit_s) and a model's download may outlast it;
# the canary's latency leaves that first load out (shared.canary). A non-UAE region
# stops the function here.
SETTINGS = Settings.from_env()
APP = build_serve_app(SETTINGS)
# Captured rows are written before each invocation returns: Lambda may stop a frozen
# container without running any code of ours, and a buffer would go with it.
handler = flushed_after_each_call(Mangum(APP, lifespan="off"))
