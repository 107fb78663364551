# lamassu-backup-operator: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)/tests
CHART := helm/lamassu-backup-operator
PYTEST_ARGS ?=

.PHONY: help
help: ## List every target with what it does
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,lint]'
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv with the project and its test and lint tools

.PHONY: system-deps
system-deps: ## Install the Debian packages the tests use (PostgreSQL 15, GnuPG, zstd, lz4) if missing
	bash scripts/install-system-deps.sh

.PHONY: lock
lock: venv ## Re-pin constraints.txt from the current .venv
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -vi '^lamassu'; } > constraints.tmp
	mv constraints.tmp constraints.txt

.PHONY: crds
crds: venv ## Regenerate the CRDs in crds/ and the chart from the pydantic models
	$(VENV)/bin/lamassu-backup crds --out crds --out $(CHART)/crds

.PHONY: crds-check
crds-check: venv ## Fail when the committed CRDs differ from what the models generate
	tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(VENV)/bin/lamassu-backup crds --out $$tmp; \
	diff -ru --exclude='*.md' $$tmp crds >/dev/null && diff -ru $$tmp $(CHART)/crds >/dev/null \
	  || { diff -ru $$tmp crds; diff -ru $$tmp $(CHART)/crds; echo 'CRDs drifted from the models: run `make crds` and commit'; exit 1; }

.PHONY: lint
lint: venv crds-check ## ruff, ruff format --check, mypy --strict, import-linter, CRD drift
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy operator tests bench
	$(VENV)/bin/lint-imports --no-cache

.PHONY: fmt
fmt: venv ## Format and autofix with ruff
	$(VENV)/bin/ruff format operator tests bench
	$(VENV)/bin/ruff check --fix operator tests bench

.PHONY: unit
unit: venv ## Fast unit tests (no servers)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: build-deps
build-deps: ## Build (or take from the cache) the control plane, OpenBao, Helm and Lamassu binaries
	bash scripts/build-controlplane.sh >/dev/null
	bash scripts/build-openbao.sh >/dev/null
	bash scripts/build-helm.sh >/dev/null
	bash scripts/build-lamassu.sh >/dev/null

.PHONY: images
images: system-deps ## Build the operator and runner images (buildah, no daemon; cached by content hash)
	bash scripts/build-images.sh >/dev/null

.PHONY: test
test: venv system-deps lint build-deps ## Install what the tests need, lint, run every test tier (CI: .ci/run)
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: platform-up
platform-up: venv system-deps build-deps ## Start the local platform in the background (.platform/env, .platform/kubeconfig)
	$(PY) -m lamassu_platform up --state .platform

.PHONY: platform-down
platform-down: ## Stop the local platform; fails if any of its processes is left
	$(PY) -m lamassu_platform down --state .platform

.PHONY: bench-backup
bench-backup: venv system-deps build-deps ## Backup benchmark: runner vs the runbook's pipeline vs pg_dump (BENCH_SIZE_MIB=1024)
	$(PY) -m bench.backup

.PHONY: bench-restore
bench-restore: venv system-deps build-deps ## Restore benchmark: runner vs the runbook's restore vs pg_restore from a file (BENCH_SIZE_MIB=1024)
	$(PY) -m bench.restore

.PHONY: bench-restore-cr
bench-restore-cr: venv system-deps build-deps ## LamassuRestore benchmark: runner alone vs the resource end to end by phase, and a DR restore (BENCH_SIZE_MIB=1024)
	$(PY) -m bench.restore_cr

.PHONY: bench-operator
bench-operator: venv system-deps build-deps ## Operator benchmark: policy -> Job latency, RSS and CPU with 1,000 policies
	$(PY) -m bench.operator

.PHONY: bench-pitr
bench-pitr: venv system-deps ## PITR benchmark: recovery point vs archive_timeout=300, shipping CPU/GiB, PITR restore vs by hand (BENCH_SIZE_MIB/BENCH_WAL_MIB=256)
	$(PY) -m bench.pitr

.PHONY: fuzz-long
fuzz-long: venv system-deps build-deps ## The fuzzed API with 5,000 cases (CI runs 500): FUZZ_CASES=N to change
	FUZZ_CASES=$${FUZZ_CASES:-5000} $(PY) -m pytest tests/e2e/test_fuzz.py -s $(PYTEST_ARGS)

.PHONY: fault-matrix
fault-matrix: venv system-deps build-deps ## The fault matrix (runner and operator cells) with its figures (fault-matrix.txt)
	bash scripts/build-versitygw.sh >/dev/null
	$(PY) -m pytest tests/integration/test_fault_matrix.py $(wildcard tests/e2e/test_fault_matrix.py) $(PYTEST_ARGS)

.PHONY: load
load: venv system-deps build-deps ## Load long mode: 50 policies every minute for 30 min, figures at the end (LOAD_POLICIES, LOAD_MINUTES)
	LOAD_POLICIES=$${LOAD_POLICIES:-50} LOAD_MINUTES=$${LOAD_MINUTES:-30} $(PY) -m pytest tests/e2e/test_load.py -s $(PYTEST_ARGS)

.PHONY: demo
demo: platform-up ## Run it locally: the platform, the operator, a sample policy and a backup (stop: make platform-down)
	$(PY) -m lamassu_platform.demo --state .platform
