# syntax=docker/dockerfile:1
# NanoIoT: MQTT over TLS (8883) with X.509 device authentication, admin API and web UI (8080).
#
# Build:  docker build -t nanoiot .
# Run:    docker compose up -d   (see docs/deploy.md: PostgreSQL, server credentials, token)
#
# Two stages: the first builds wheels of NanoIoT and every runtime dependency (no test or
# check extras), the second installs only those wheels, offline, into a slim image that runs
# as an unprivileged user. Settings come from the environment (MQTT_SSL_*, NANOIOT_*; see
# conf/nanoiot.yaml); data and server credentials live in the volume /var/lib/nanoiot.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY admin ./admin
COPY auth ./auth
COPY broker ./broker
COPY conf ./conf
COPY nanoiot ./nanoiot
COPY storage ./storage
# The "fast" extra (uvloop) is a runtime speed-up the broker uses when installed; the cluster
# image adds "cluster" (the NATS client, docker-compose.cluster.yml).
ARG NANOIOT_EXTRAS=fast
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[${NANOIOT_EXTRAS}]"

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Only the wheels built above (--no-index: nothing else is fetched), so the image holds
# exactly the runtime dependencies the first stage resolved. The keygen scripts ship as the
# package's script files and land in /usr/local/bin next to `nanoiot`.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl
COPY --chmod=0755 scripts/entrypoint /usr/local/bin/nanoiot-entrypoint

# A fixed uid/gid, so a bind-mounted data folder can be given to it (chown 10001:10001).
RUN groupadd --system --gid 10001 nanoiot \
    && useradd --system --uid 10001 --gid nanoiot --home-dir /var/lib/nanoiot \
        --shell /usr/sbin/nologin nanoiot \
    && install -d -o nanoiot -g nanoiot -m 0700 /var/lib/nanoiot /var/lib/nanoiot/certs

# The container's defaults; every one can be overridden at run time. The admin HTTP server
# listens on all interfaces inside the container (the host decides what it publishes).
# NANOIOT_ADMIN_TOKEN and NANOIOT_DATABASE_URL are secrets: they come at run time, never here.
ENV NANOIOT_DATA_DIR=/var/lib/nanoiot \
    NANOIOT_HTTP_BIND_ADDRESS=0.0.0.0 \
    NANOIOT_HTTP_PORT=8080 \
    MQTT_SSL_BIND_ADDRESS=0.0.0.0 \
    MQTT_SSL_BIND_PORT=8883

USER 10001:10001
WORKDIR /var/lib/nanoiot
VOLUME ["/var/lib/nanoiot"]
EXPOSE 8883 8080

# Slim images have no curl: Python asks /healthz (200 when the broker listens and the database
# answers; urlopen raises on 503, so the exit status is 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('NANOIOT_HTTP_PORT', '8080') + '/healthz', timeout=4)"]

# Waits for the database, migrates it, then execs the command (default: nanoiot serve), so the
# broker is PID 1 and receives SIGTERM from `docker stop` itself.
ENTRYPOINT ["nanoiot-entrypoint"]
CMD ["nanoiot", "serve"]
