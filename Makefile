# Every target runs the same way on a laptop and in CI. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1

VENV := .venv
STAMP := $(VENV)/.bootstrap-stamp
CTR := $(VENV)/bin/ctr
PYTEST := $(VENV)/bin/pytest

.PHONY: help setup demo test mlflow-ui lint train

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): uv.lock pyproject.toml inference/pyproject.toml training/pyproject.toml model-images/pyproject.toml scripts/apt-packages.txt scripts/bootstrap.sh
	./scripts/bootstrap.sh
	@touch $@

setup: $(STAMP) ## Install Debian packages, uv and the locked Python environment

demo: $(STAMP) ## Run the whole loop on one machine (generated logs unless DEMO_ARGS says otherwise)
	$(CTR) demo $(DEMO_ARGS)

test: $(STAMP) ## Run the test suite (what CI runs)
	$(PYTEST) $(PYTEST_ARGS)

train: $(STAMP) ## Run the training pipeline (dvc repro; dvc.yaml calls the environment's python)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

mlflow-ui: $(STAMP) ## Open the MLflow UI on the demo's store at http://127.0.0.1:5000
	$(CTR) mlflow-ui

lint: $(STAMP) ## Ruff over the Python code
	$(VENV)/bin/ruff check ctr inference training model-images tests
