"""Azure Functions entry point of serve: each dataset's FastAPI app (the same one the
Lambda runs behind mangum) under ``/datasets/<dataset>/``, behind the Functions host's
ASGI middleware. One app serves every dataset spec; each model loads on its first request.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import azure.functions as func
from starlette.applications import Starlette
from starlette.routing import Mount

from shared.settings import Settings
from shared.specs import specs_dir
from shared.wiring import build_ports, build_serve_app

logging.getLogger().setLevel(logging.INFO)

# Built once per cold start: the apps now, each model on its first request.
SETTINGS = Settings.from_env()
PORTS = build_ports(SETTINGS)
APP = Starlette(
    routes=[
        Mount(
            f"/datasets/{path.stem}",
            app=build_serve_app(replace(SETTINGS, serve_dataset=path.stem), PORTS),
        )
        for path in sorted(specs_dir(SETTINGS.specs_dir).glob("*.yaml"))
    ]
)
ASGI = func.AsgiMiddleware(APP)  # type: ignore[no-untyped-call]


async def main(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    response: func.HttpResponse = await ASGI.handle_async(req, context)
    return response
