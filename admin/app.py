"""The admin application: REST API, web UI, health and metrics in one FastAPI app."""

from importlib.metadata import version

from fastapi import Depends, FastAPI

from admin import api_docs, health, problems, reference, v1, web
from admin.audit import AuditLog
from admin.body_guard import BodyGuard
from admin.context import AdminContext
from admin.headers import SecurityHeaders
from admin.security import require_admin
from admin.server import HttpServer
from nanoiot.settings import Settings


def create_app(context: AdminContext) -> FastAPI:
    """The application, bounded by ``context.limits``."""
    app = FastAPI(
        title="NanoIoT admin API",
        version=version("nanoiot"),
        description=(
            "Provision devices and their credentials (X.509 certificates, access tokens, MQTT "
            "basic). Every endpoint but /healthz, /docs and /openapi.json needs the admin token as "
            "'Authorization: Bearer <token>' (or 'X-Authorization: Bearer <token>')."
        ),
        docs_url=None,  # admin.api_docs serves /docs without a CDN
        # Starlette would redirect "/ui/devices/" to "/ui/devices" at the Host header's host:
        # a Host an attacker sets (or a proxy passes on) must not pick where a client goes.
        redirect_slashes=False,
        redoc_url=None,
    )
    app.state.context = context
    problems.install(app)
    app.include_router(health.router)
    admin_only = [Depends(require_admin)]
    app.include_router(reference.router, dependencies=admin_only)
    app.include_router(v1.router, dependencies=admin_only)
    web.install(app)
    api_docs.install(app)
    # Outermost but for the 500 handler: the token and the body's size are checked before
    # any route reads the body.
    app.add_middleware(BodyGuard, limits=context.limits)
    # Outside the body guard, so that its 413 and 401 answers get the headers too.
    app.add_middleware(SecurityHeaders)
    # Outermost: a request refused by the guards (401, 413) is in the audit trail too.
    app.add_middleware(AuditLog)
    return app


async def start_admin(context: AdminContext, settings: Settings) -> HttpServer:
    """The admin application on the configured address, with its configured bounds
    (``context.limits``: build the context with ``HttpLimits.of(settings)``)."""
    return await HttpServer.start(
        create_app(context), settings.http_bind_address, settings.http_port,
        trusted_proxies=settings.http_trusted_proxies, limits=context.limits,
    )  # fmt: skip
