"""The operator's surfaces over HTTP: the admin REST API, the web UI, health and metrics.

``admin.app.create_app(context)`` builds one FastAPI application. Under ``nanoiot serve`` it runs
in the broker's event loop (``admin.server``), so a change made here reaches live sessions at
once; ``nanoiot api`` runs it alone against the same database, and brokers then learn of
changes through the store's change feed.

Modules, one concept each:

- ``context``: what the routes work on (the store, the token, an optional view of the broker);
- ``security``: the admin token (bearer headers), its rate limit on failures;
- ``token``: where the token comes from (setting, or generated once into the data dir);
- ``problems``: store and credential errors mapped to JSON HTTP errors;
- ``service``: operations both the API and the UI perform (switching a device's credentials);
- ``schemas``, ``reference``: endpoints shaped like the reference system's (``/api/...``);
- ``v1`` (with ``v1_models``, ``v1_credentials``, ``v1_cas``, ``v1_import``, ``v1_rows``,
  ``v1_upload``): what goes beyond it (``/api/v1/...``); ``trusted_cas``: CA checks both use;
- ``web``: the server-rendered UI (``/ui``), with its session cookie and CSRF tokens;
- ``health``: ``/healthz`` and ``/metrics``; ``server``: uvicorn inside our event loop.
"""
