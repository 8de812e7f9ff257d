# Flourish: the two commands first (make up; make test), then the rest.
# Everything installs into .venv and .flourish/ inside the checkout; nothing is installed by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FLOURISH := $(BIN)/flourish

.PHONY: up down test check bench status install lock infra-up infra-down clean

## Start the whole platform with demo data and print every URL.
up: install
	$(FLOURISH) platform up

## Stop the platform and the local stack it started.
down:
	@if [ -x $(FLOURISH) ]; then $(FLOURISH) platform down; fi

## Install what the tests need, run the static checks (pyproject's import contracts, ruff, mypy:
## strict on the kernel and the domains), start the stack if it is not running, run every test.
## FLOURISH_TEST_STACK=containers takes the tests' PostgreSQL and Kafka from testcontainers
## instead (needs a Docker engine).
test: install check
	$(FLOURISH) infra up
	$(BIN)/pytest -q

## The static checks alone: the dependency direction, lint, types. Any finding fails `make test`, so CI.
check: install
	$(BIN)/lint-imports --no-logo
	$(BIN)/ruff check .
	$(BIN)/mypy

## The benchmarks (not part of the tests): JSON lines, each figure beside its baseline.
bench: install
	$(FLOURISH) infra up
	$(BIN)/python -m bench

status: install
	$(FLOURISH) platform status

install: $(STAMP)

## Every dependency (runtime, test, and pip/setuptools/wheel themselves) from requirements.lock, each
## file checked against its sha256; wheels only, so nothing is built with an unpinned tool. Then the
## project itself, editable, with the locked setuptools (no dependency and no build tool fetched).
$(STAMP): pyproject.toml requirements.lock Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

## Rewrite requirements.lock (runtime + test + build) and requirements-runtime.lock (what the image
## installs) from pyproject.toml: every pin the lock has stays, a new or changed requirement resolves;
## `make lock UPGRADE=1` moves every pin to its newest allowed version. Universal (Linux, macOS,
## Windows markers) for Python 3.11, with the sha256 of every file of each pinned version.
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" --quiet $(if $(UPGRADE),--upgrade)
lock: install
	$(UV_COMPILE) --extra test --group build -o requirements.lock
	$(UV_COMPILE) --group build -c requirements.lock -o requirements-runtime.lock

infra-up: install
	$(FLOURISH) infra up

infra-down:
	@if [ -x $(FLOURISH) ]; then $(FLOURISH) infra down; fi

## Remove the local stack's data (PostgreSQL, Kafka) and the virtual environment.
clean: down
	rm -rf .flourish $(VENV) deploy/local/.cache
