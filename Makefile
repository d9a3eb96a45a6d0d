# Every target runs the same way on a laptop and in CI. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1

VENV := .venv
# Commands that targets start (dvc stages run `python -m ...`) use the project's environment.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
STAMP := $(VENV)/.bootstrap-stamp
CTR := $(VENV)/bin/ctr
PYTEST := $(VENV)/bin/pytest

.PHONY: help setup demo test mlflow-ui lint bench bench-full train

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

# The local copy of the raw logs that data/raw/criteo.dvc records: the Criteo
# development sample beside the checkout. Its terms forbid committing it.
RAW_SAMPLE ?= ../shared/data/ctr/criteo_dev.tsv.gz

train: $(STAMP) ## Copy missing raw logs from RAW_SAMPLE (checked against data/raw/*.dvc), then dvc repro
	$(VENV)/bin/python -m ctr.raw_logs --sample $(RAW_SAMPLE)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

mlflow-ui: $(STAMP) ## Open the MLflow UI on the demo's store at http://127.0.0.1:5000
	$(CTR) mlflow-ui

lint: $(STAMP) ## Ruff over the Python code
	$(VENV)/bin/ruff check ctr inference training model-images tests

# Images -----------------------------------------------------------------------

.PHONY: base-image runtime-image

base-image: $(STAMP) ## Build the Debian base image with debootstrap, cached in .cache/images (needs root)
	$(CTR) image base

runtime-image: $(STAMP) ## Build the inference runtime image into .ctr/images/runtime (BASE_IMAGE=ref to pick the base)
	$(CTR) image runtime $(if $(BASE_IMAGE),--base $(BASE_IMAGE))

# Delivery pipeline ------------------------------------------------------------
# Each CircleCI job runs one of these targets, which run the same way on a
# laptop; `make ci-local` runs the jobs in order on this machine.

MODEL_NAME ?= ctr-criteo
# The model version to bake; "champion" is the MLflow alias training moves.
MODEL_VERSION ?= champion
REGISTRY ?= 111122223333.dkr.ecr.us-east-1.amazonaws.com
IMAGE_REPOSITORY ?= ctr-model
RELEASE_DIR ?= .ctr/release
# Image the model layer goes on: "runtime" builds (or reuses) this checkout's
# runtime image from BASE_IMAGE; empty bakes onto scratch, as ci-local does.
BAKE_BASE ?=
# 0 bakes without the compiled form of the model, so workers score with LightGBM.
BAKE_COMPILE ?= 1
# x86-64 level the compiled form targets, or host. x86-64-v3 runs on AWS c5, m5,
# r5, c5a, m5a and later x86 families; see docs/images.md.
BAKE_COMPILE_TARGET ?= x86-64-v3
export BASE_IMAGE
ENV ?= staging
# Seconds a promotion waits for Argo CD to report the rollout healthy.
PROMOTE_TIMEOUT ?= 900
DEPLOY_ARGS ?=
AWS_WEB_IDENTITY_TOKEN_FILE ?= /tmp/circleci-oidc-token
# Set to 1 to push the dvc.lock commit (CI jobs do not share a checkout).
GIT_PUSH ?=

.PHONY: gitops-check ci-aws-identity pipeline-train pipeline-release pipeline-promote ci-local

gitops-check: $(STAMP) ## Render and validate the GitOps manifests and the CircleCI config
	$(PYTEST) tests/gitops -q $(PYTEST_ARGS)

ci-aws-identity: ## Write CircleCI's OIDC token where the AWS SDKs look for it (no static keys)
	@test -n "$$CIRCLE_OIDC_TOKEN_V2" || { echo "ci-aws-identity: CIRCLE_OIDC_TOKEN_V2 is not set; run it in a CircleCI job that uses a context" >&2; exit 1; }
	@test -n "$$AWS_ROLE_ARN" || { echo "ci-aws-identity: AWS_ROLE_ARN is not set (the CI role from terraform output)" >&2; exit 1; }
	@umask 077 && printf '%s' "$$CIRCLE_OIDC_TOKEN_V2" > $(AWS_WEB_IDENTITY_TOKEN_FILE)
	@echo "ci-aws-identity: AWS SDKs will assume $$AWS_ROLE_ARN with the token in $(AWS_WEB_IDENTITY_TOKEN_FILE)"

pipeline-train: $(STAMP) ## Retrain (dvc repro, logged to MLflow) and commit dvc.lock and metrics with [skip ci]
	$(VENV)/bin/dvc repro
	$(VENV)/bin/dvc push
	git add -A -- dvc.lock metrics plots models data
	git diff --cached --quiet || git commit --quiet -m "Record the training run in dvc.lock [skip ci]"
	$(if $(GIT_PUSH),git push origin HEAD:$$(git rev-parse --abbrev-ref HEAD))

pipeline-release: $(STAMP) ## Bake MODEL_VERSION into an image, push it to REGISTRY, write RELEASE_DIR/image-ref
	@mkdir -p $(RELEASE_DIR)
	$(CTR) image bake $(MODEL_NAME) $(MODEL_VERSION) --layout $(RELEASE_DIR)/layout $(if $(BAKE_BASE),--base $(BAKE_BASE)) \
		$(if $(filter 0,$(BAKE_COMPILE)),--no-compile,--compile-target $(BAKE_COMPILE_TARGET))
	$(CTR) image push $(RELEASE_DIR)/layout $(REGISTRY)/$(IMAGE_REPOSITORY) | tee $(RELEASE_DIR)/push.log
	tail -n 1 $(RELEASE_DIR)/push.log > $(RELEASE_DIR)/image-ref
	@echo "release: $$(cat $(RELEASE_DIR)/image-ref)"

pipeline-promote: $(STAMP) ## Promote to ENV (staging: the pushed image; prod: what staging runs) and wait
	$(CTR) deploy promote $(ENV) $(if $(filter prod,$(ENV)),--from staging,$$(cat $(RELEASE_DIR)/image-ref)) \
		--push --wait --timeout $(PROMOTE_TIMEOUT) $(DEPLOY_ARGS)

ci-local: $(STAMP) ## Run the pipeline's jobs in order on this machine (local registry, API stand-in)
	./scripts/ci-local.sh

# Infrastructure ---------------------------------------------------------------

.PHONY: tf-check
tf-check: $(STAMP) ## Terraform: fmt, offline init and validate, terraform test, checkov, invariants
	$(PYTEST) tests/terraform $(PYTEST_ARGS)

# Benchmarks -------------------------------------------------------------------

.PHONY: bench bench-full bench-e2e
# Trained models and compiled artifacts are cached in .cache/bench, so a rerun only measures.
bench: $(STAMP) ## Measure scoring speed of every engine on the reference models (bench/results.json)
	$(VENV)/bin/python -m bench $(BENCH_ARGS)
	$(VENV)/bin/python -m bench.startup
	$(VENV)/bin/python -m bench.e2e

bench-e2e: $(STAMP) ## Measure worker processes scoring 128 MB partitions from the local S3 server
	$(VENV)/bin/python -m bench.e2e $(BENCH_E2E_ARGS)

bench-full: $(STAMP) ## As bench, plus the large 1000-tree, 255-leaf models (slow: training and compiling)
	$(VENV)/bin/python -m bench --full $(BENCH_ARGS)
