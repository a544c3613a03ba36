"""The operator's web UI under ``/ui``: server-rendered pages, plain forms, no build step.

Every flow works without JavaScript (forms, POST-redirect-GET, confirmation pages); the one
small script only adds conveniences. Modules:

- ``session``: sign-in cookie and CSRF tokens (stateless, keyed by the admin token);
- ``render``: templates, security headers, error pages for ``/ui`` requests;
- ``signin``: sign in and out, and the redirects from ``/`` and ``/ui``;
- ``devices``, ``device``: the Devices list and one device with its Device Credentials;
- ``credentials``, ``forms``: form input to the shared operations (``admin.service``) and back;
- ``cas``: trusted CAs and their CRLs;
- ``nodes``: this node, or the cluster's live members, with their figures.
"""

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from admin.web import cas, device, devices, nodes, signin
from admin.web.render import PREFIX, STATIC_DIR, install_error_pages


def install(app: FastAPI) -> None:
    """Mount the UI on ``app``; call after the API's error handlers are installed."""
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    for module in (signin, devices, device, cas, nodes):
        app.include_router(module.router)
    install_error_pages(app)
