# syntax=docker/dockerfile:1
# The one image every Flourish service runs from: which service a container is comes from
# FLOURISH_SERVICE (assessment, planning, consent, reporting), which half from FLOURISH_ROLE
# (api, consumers, or all). Multi-stage: the build stage makes a wheel and a virtualenv; the
# runtime stage has Python, that virtualenv and nothing else (no compiler, no pip cache, no
# source tree), runs as an unprivileged user and works on a read-only root filesystem.
#
#   docker build -t flourish:dev .
#   docker run --rm -e FLOURISH_SERVICE=assessment -e DATABASE_URL=... -e KAFKA_BOOTSTRAP_SERVERS=... flourish:dev

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/flourish
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p shared services flourish \
 && touch shared/__init__.py services/__init__.py flourish/__init__.py \
 && /opt/flourish/bin/pip install --quiet . \
 && /opt/flourish/bin/pip uninstall --quiet --yes flourish
COPY shared ./shared
COPY services ./services
# The composition: the `flourish` command (dev-token, audit verify, ...) inside the image.
COPY flourish ./flourish
RUN /opt/flourish/bin/pip install --quiet --no-deps . \
 # Bytecode now, because the running container cannot write it.
 && /opt/flourish/bin/python -m compileall -q -j 0 /opt/flourish/lib \
 && /opt/flourish/bin/pip uninstall --quiet --yes pip setuptools wheel || true

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="flourish" \
      org.opencontainers.image.description="Flourish services (assessment, planning, consent, reporting)"
RUN groupadd --system --gid 10001 flourish \
 && useradd --system --uid 10001 --gid flourish --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin flourish
COPY --from=build /opt/flourish /opt/flourish
ENV PATH=/opt/flourish/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLOURISH_STATE_DIR=/tmp/flourish \
    FLOURISH_SERVICE=assessment \
    FLOURISH_ROLE=all
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
# Kubernetes gives its own command (deploy/k8s/base/service/api.yaml); this one is for docker run
# and compose. No access log: client addresses are staff's personal data. The asyncio loop, not
# uvloop: see UVICORN_LOOP in flourish/local/services.py (a consumer must survive a broker restart).
CMD ["sh", "-c", "exec uvicorn --factory \"services.${FLOURISH_SERVICE}.app:app\" --host 0.0.0.0 --port 8000 --no-access-log --timeout-graceful-shutdown 20 --loop asyncio"]
