# `make demo` and `make test` do all of their own set-up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The project runs on Python 3.12; LocalStack 2026.3 needs Python 3.13 and gets
# its own virtualenv so that its pins never meet ours.
PY312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12 2>/dev/null))
PY313 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) $(shell command -v python3.13 2>/dev/null))
VENV := .venv
LS_VENV := .venv-localstack
LOGS := .cache/setup
AML_SERVER_PINS := azureml-inference-server-http==1.5.1 inference-schema==1.8
LOCALSTACK_PINS := 'localstack-core[runtime]==2026.3.0' 'cbor2<6' 'pyopenssl<24.3' 'cryptography<44' 'service_identity<24.2'

.PHONY: help setup venv localstack-venv node-deps demo test lint typecheck unit integration bench layers azure-package down clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(LOGS):
	@mkdir -p $(LOGS)

$(VENV)/.installed: pyproject.toml Makefile | $(LOGS)
	@test -n "$(PY312)" || { echo "Python 3.12 not found: install it (pyenv install 3.12) or set PY312=/path/to/python3.12"; exit 2; }
	@echo "setting up $(VENV) with $(PY312) ..."
	@test -x $(VENV)/bin/python || $(PY312) -m venv $(VENV)
	@$(VENV)/bin/pip install -q -e '.[dev,local,azureml,train,drift,infra]' > $(LOGS)/pip-project.log 2>&1 || { tail -30 $(LOGS)/pip-project.log; exit 1; }
	@# Azure ML's inference server, only for tests/unit/test_score_online.py to load the scoring
	@# script with the server's own loader and response class. It pins pydantic ~=2.12 and
	@# OpenTelemetry 1.33 against our 2.14 / 1.44, so it comes without its dependencies (it
	@# needs only Flask here, which moto brings); the cloud's dhow-serve environment has its pins.
	@$(VENV)/bin/pip install -q --no-deps $(AML_SERVER_PINS) >> $(LOGS)/pip-project.log 2>&1 || { tail -30 $(LOGS)/pip-project.log; exit 1; }
	@touch $@

$(LS_VENV)/.installed: Makefile | $(LOGS)
	@test -n "$(PY313)" || { echo "Python 3.13 not found (LocalStack needs it): pyenv install 3.13, or set PY313=..."; exit 2; }
	@echo "setting up $(LS_VENV) with $(PY313) (LocalStack 2026.3.0, about a minute) ..."
	@test -x $(LS_VENV)/bin/python || $(PY313) -m venv $(LS_VENV)
	@$(LS_VENV)/bin/pip install -q $(LOCALSTACK_PINS) > $(LOGS)/pip-localstack.log 2>&1 || { tail -30 $(LOGS)/pip-localstack.log; exit 1; }
	@touch $@

localstack/node_modules/.installed: localstack/package.json localstack/package-lock.json | $(LOGS)
	@echo "installing Node tools (Azurite) ..."
	@cd localstack && npm ci --no-audit --no-fund > ../$(LOGS)/npm.log 2>&1 || { tail -30 ../$(LOGS)/npm.log; exit 1; }
	@touch $@

venv: $(VENV)/.installed  ## The project's virtualenv
localstack-venv: $(LS_VENV)/.installed  ## LocalStack's own virtualenv (Python 3.13)
node-deps: localstack/node_modules/.installed  ## Azurite from npm
setup: venv localstack-venv node-deps  ## Everything the demo and the tests need

CLOUD ?= aws
demo: setup  ## Start the local platform and run the pipeline on the sample data (CLOUD=aws|azure)
	@CLOUD=$(CLOUD) ./localstack/demo.sh

lint: venv  ## ruff (lint and format check)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv  ## mypy --strict
	$(VENV)/bin/mypy

unit: venv  ## Unit tests only (no emulators)
	$(VENV)/bin/pytest -m "not integration" -q

integration: setup  ## Integration tests against LocalStack and Azurite (the session starts and stops them)
	$(VENV)/bin/pytest -m integration -q

test: setup lint typecheck  ## Lint, types, unit and integration tests
	$(VENV)/bin/pytest -q

bench: venv  ## Benchmarks (bench/*/run.py), each against its baseline in the same run
	$(VENV)/bin/python bench/validation/run.py
	$(VENV)/bin/python bench/serving/run.py
	$(VENV)/bin/python bench/drift/run.py

layers: venv  ## Build the Lambda layers (x86_64, arm64) and print their sizes against the limits
	$(VENV)/bin/python -m layers.build $(LAYERS_ARGS)

azure-package: venv  ## Build the Azure Function App's package (code + Linux wheels), import-checked, sized against the limit
	$(VENV)/bin/python -m infra.azure.app_package

down: venv  ## Stop the local platform
	$(VENV)/bin/dhow local down

clean: down  ## Remove the virtualenvs and local state
	rm -rf $(VENV) $(LS_VENV) .local .cache localstack/node_modules
