# The one image every Flourish service runs from: which service a container is comes from
# FLOURISH_SERVICE (assessment, planning, consent, reporting), which half from FLOURISH_ROLE
# (api, consumers, or all). Multi-stage: the build stage makes a virtualenv from the hash-locked
# requirements-runtime.lock; the runtime stage has Python, that virtualenv, and what the features
# need from the distribution (headless Chromium and its fonts: the intervention report's PDF),
# installed by the same script the tests use (deploy/tools/install-chromium.sh) — and nothing else
# (no compiler, no pip, no apt lists, no source tree). It runs as an unprivileged numeric user and
# works on a read-only root filesystem. No `# syntax=` directive: the builder's own Dockerfile
# frontend reads it, so no frontend image is pulled by a tag that moves.
#
#   docker build -t flourish:dev .
#   docker run --rm -e FLOURISH_SERVICE=assessment -e DATABASE_URL=... -e KAFKA_BOOTSTRAP_SERVERS=... flourish:dev

# The base image by exact tag and digest (the multi-platform index of python:3.11.16-slim-bookworm,
# as docker-library/repo-info records it). deploy/tools' pin script refreshes the digest where a
# registry is reachable; never a floating tag here (tests/deploy/test_image.py checks).
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/flourish
# Dependencies first, so a code change does not reinstall them: every file checked against the
# lock's sha256, wheels only (nothing is compiled, no unpinned build tool is fetched). The lock
# also pins pip, setuptools and wheel, which build the project below.
COPY requirements-runtime.lock ./
RUN /opt/flourish/bin/python -m pip install --quiet --require-hashes --only-binary=:all: -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
# The composition: the `flourish` command (dev-token, audit verify, ...) inside the image.
COPY flourish ./flourish
RUN /opt/flourish/bin/python -m pip install --quiet --no-deps --no-build-isolation . \
 # Bytecode now, because the running container cannot write it.
 && /opt/flourish/bin/python -m compileall -q -j 0 /opt/flourish/lib \
 && /opt/flourish/bin/python -m pip uninstall --quiet --yes pip setuptools wheel

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="flourish" \
      org.opencontainers.image.description="Flourish services (assessment, planning, consent, reporting)"
# The PDF renderer: chromium and its fonts from Debian, through the project's script (the tests run
# the same one), as root before USER; the package lists and archives are removed in the same layer.
COPY deploy/tools/install-chromium.sh /usr/local/sbin/flourish-install-chromium
RUN /usr/local/sbin/flourish-install-chromium --runtime \
 && rm -f /usr/local/sbin/flourish-install-chromium \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*
RUN groupadd --system --gid 10001 flourish \
 && useradd --system --uid 10001 --gid flourish --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin flourish
COPY --from=build /opt/flourish /opt/flourish
# Chromium's profile is a fresh temporary directory per run (services/reporting/readmodels/browser.py);
# its crash handler and dconf write under XDG_CONFIG_HOME/XDG_CACHE_HOME, so those point at /tmp, the
# one writable place (an emptyDir in Kubernetes, a tmpfs in compose).
ENV PATH=/opt/flourish/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_CONFIG_HOME=/tmp/.config \
    XDG_CACHE_HOME=/tmp/.cache \
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
