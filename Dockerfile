# syntax=docker/dockerfile:1.7
# One image per service, from the uv workspace:
#   docker build --build-arg SERVICE=auth -t aether-auth .
# The builder installs exactly uv.lock's pins for one workspace member (no dev dependencies)
# into /app/.venv; the runtime stage gets that venv and nothing else: no compiler, no uv, no pip.
#
# Base: python:3.11-slim-bookworm pinned by its multi-arch index digest (3.11.16, bookworm).
# The digest was not pulled or verified on the machine this was written on (no Docker engine,
# no registry access): refresh it with `docker buildx imagetools inspect python:3.11-slim-bookworm`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# --- manifests: only pyproject.toml files + uv.lock, so the dependency layer below is cached
# until a manifest or the lock changes (not on every source edit).
FROM ${PYTHON_IMAGE} AS manifests
WORKDIR /src
COPY . .
RUN find . -type f ! -name pyproject.toml ! -name uv.lock -delete \
    && find . -depth -type d -empty -delete

# --- builder: uv sync of one workspace member into /app/.venv.
FROM ${PYTHON_IMAGE} AS builder
ARG SERVICE
ARG UV_VERSION=0.13.9
RUN test -n "${SERVICE}" || { echo "build arg SERVICE is required (e.g. --build-arg SERVICE=auth)" >&2; exit 1; }
RUN python -m pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Third-party dependencies first (cached layer), workspace members after.
COPY --from=manifests /src/ ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package "aether-${SERVICE}"
COPY libs/ libs/
COPY services/${SERVICE}/ services/${SERVICE}/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "aether-${SERVICE}" \
    && /app/.venv/bin/python -c "import importlib; importlib.import_module('aether_${SERVICE}')"

# --- runtime: the venv, a non-root user, nothing else.
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="aether-${SERVICE}" \
      org.opencontainers.image.description="Aether ${SERVICE} service" \
      org.opencontainers.image.licenses="Proprietary"
# pip/setuptools/wheel are build tools: the runtime has no use for them.
RUN python -m pip uninstall -y pip setuptools wheel >/dev/null 2>&1 || true; \
    groupadd --system --gid 10001 aether \
    && useradd --system --uid 10001 --gid aether --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin aether \
    && printf '#!/bin/sh\nexec python -m aether_%s "$@"\n' "${SERVICE}" > /usr/local/bin/aether-service \
    && chmod 0755 /usr/local/bin/aether-service
COPY --from=builder --chown=root:root /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AETHER_SERVICE=${SERVICE}
WORKDIR /app
USER 10001:10001
# The chart sets AETHER_HTTP_PORT/AETHER_GRPC_PORT and probes /healthz itself; this is for
# `docker run` and compose.
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('AETHER_HTTP_PORT', '8000'), timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/aether-service"]
