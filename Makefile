# mlprod: `make` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= ml-storages/models/nanodet-g-416
MODELS_DIR ?= ml-storages/models
# `make model` prepares what `make run` serves; `make model MODEL=yolox-s` one model only.
# A YOLOX file is taken from MODEL_FROM (a file or folder) when given, else downloaded; both
# checked against the pinned sha256. The shared folder beside the checkout serves when present.
MODEL ?=
MODEL_FROM ?= $(wildcard ../shared/models/$(or $(MODEL),yolox-nano))
# what `make run` serves, the default (an upload without a `model` field) first
RUN_MODELS ?= yolox-nano,nanodet-g-416
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install lock upgrade lock-check test-latest model run test test-unit test-integration test-browser test-s3 bench eval bench-accuracy bench-peers lint format typecheck clean

help: ## show this help
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

# Every install takes exactly the versions (and hashes) of uv.lock: scripts/lock_install.sh
$(STAMP): pyproject.toml uv.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	scripts/lock_install.sh $(PY) all,dev editable
	touch $(STAMP)

AXE := tests/browser/node_modules/axe-core/axe.min.js
$(AXE): tests/browser/package.json tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
	touch $@

install: $(STAMP) $(AXE) ## create .venv and install the project with every extra, at the versions of uv.lock (and axe-core for the browser tests)

# uv.lock is resolved against PyPI and names PyPI's files; installs fetch the same files (hashes
# checked) from whichever index pip is configured with. The uv that resolves is the locked one.
UV := $(VENV)/bin/uv
LOCKED_UV_VERSION = $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' uv.lock)
$(UV):
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "uv==$(LOCKED_UV_VERSION)"

lock: | $(UV) ## re-resolve uv.lock after a change to pyproject.toml (every other pin stays)
	$(UV) lock

upgrade: | $(UV) ## re-resolve uv.lock to the newest versions pyproject.toml allows (then make test)
	$(UV) lock --upgrade

lock-check: | $(UV) ## fail when pyproject.toml changed without uv.lock (offline, part of make lint)
	@$(UV) lock --check --offline --quiet 2>/dev/null \
	  || { echo "uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock"; exit 1; }

# the unit tests and the type check on the newest versions pyproject.toml allows, in a throwaway
# venv: what `make upgrade` would bring, before it is locked
LATEST_VENV := $(or $(TMPDIR),/tmp)/mlprod-test-latest
test-latest: ## unit tests and mypy against the newest dependency versions, in a throwaway venv
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	scripts/lock_install.sh $(LATEST_VENV)/bin/python all,dev latest
	$(LATEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	  $(LATEST_VENV)/bin/mypy --cache-dir $(LATEST_VENV)/.mypy_cache || rc=1; \
	  rm -rf $(LATEST_VENV); exit $$rc

$(MODEL_DIR)/model.tflite: | $(STAMP)
	$(PY) -m ml_celery.model_prep.prepare_model --out $(MODEL_DIR)

$(MODELS_DIR)/%/model.json: | $(STAMP)
	$(PY) -m ml_celery.model_prep.fetch $* --out $(MODELS_DIR)/$* $(if $(MODEL_FROM),--from $(MODEL_FROM))

ifeq ($(MODEL),)
model: $(MODEL_DIR)/model.tflite $(MODELS_DIR)/yolox-nano/model.json ## fetch, verify (and convert) the served models; MODEL=yolox-s for one
else ifeq ($(MODEL),nanodet-g-416)
model: $(MODEL_DIR)/model.tflite
else
model: $(MODELS_DIR)/$(MODEL)/model.json
endif

run: export ML_MODELS ?= $(RUN_MODELS)
run: install model ## start broker/backend (embedded Valkey unless ML_BROKER_URL is set), a worker per model, API and web client
	$(PY) -m ml_tools.devstack

test: install model ## run every test: unit, integration (real services) and browser
	$(PY) -m pytest -m "" --cov --cov-report=term $(PYTEST_ARGS)

test-unit: install ## unit tests only (no services, seconds)
	$(PY) -m pytest $(PYTEST_ARGS)

test-integration: install model ## integration tests against real RabbitMQ/Redis/Valkey and a worker
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

test-browser: install model ## browser tests (Playwright + Debian's Chromium)
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

test-s3: install model ## integration and browser tests with every stack's files in a SeaweedFS bucket instead of a folder
	ML_TEST_STORAGE=s3 $(PY) -m pytest -m "integration or browser" $(PYTEST_ARGS)

bench: install model ## benchmarks on the photo mix: ceiling, stages, memory, end to end, the storage's cost per task (folder vs bucket); JSON into bench/results/
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/storage_cost.py

eval: install model ## COCO AP, AP50, AP S/M/L and images/s of each served model through the worker's code path (bench/results/eval-*.json)
	$(PY) bench/eval.py $(BENCH_ARGS)

bench-accuracy: install model ## COCO AP of the worker's code path vs full decoding (eval set, and at 12 MP)
	$(PY) bench/accuracy.py $(BENCH_ARGS)

BENTO_VENV := bench/.venv-bentoml
# the peer's own venv: the locked "bench-peer" extra (BentoML, the runtimes) and the project's
# base dependencies, at the same versions mlprod runs
$(BENTO_VENV)/.installed: pyproject.toml uv.lock | $(STAMP)
	test -d $(BENTO_VENV) || $(PYTHON) -m venv $(BENTO_VENV)
	scripts/lock_install.sh $(BENTO_VENV)/bin/python bench-peer none
	touch $@

bench-peers: install model $(BENTO_VENV)/.installed ## mlprod beside BentoML (sync endpoint, task queue), same model and load
	$(PY) bench/peers.py $(BENCH_ARGS)

lint: install lock-check ## ruff lint and format check, and uv.lock up to date with pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## format the code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: install ## mypy --strict over the service packages
	$(VENV)/bin/mypy

.PHONY: k8s-check
k8s-check: install ## render every Kubernetes overlay (kubectl kustomize), validate it offline (Kubernetes, KEDA and Prometheus-operator schemas) and policy-check it
	$(PY) deploy/checks/k8s_manifests.py deploy/k8s/overlays/dev deploy/k8s/overlays/managed
	$(PY) -m pytest tests/k8s -q -p no:cacheprovider $(PYTEST_ARGS)

clean: ## remove caches (keeps .venv and the model)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
