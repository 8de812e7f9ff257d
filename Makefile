# Flourish: the two commands first (make up; make test), then the rest.
# Everything installs into .venv and .flourish/ inside the checkout; nothing is installed by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FLOURISH := $(BIN)/flourish

.PHONY: up down test check bench status install infra-up infra-down clean

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

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=68" wheel
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

infra-up: install
	$(FLOURISH) infra up

infra-down:
	@if [ -x $(FLOURISH) ]; then $(FLOURISH) infra down; fi

## Remove the local stack's data (PostgreSQL, Kafka) and the virtual environment.
clean: down
	rm -rf .flourish $(VENV) deploy/local/.cache
