# One entry point for every developer task. `make help` lists them.
#
# Python 3.13 is found as `python3.13` on PATH, or through pyenv
# (`pyenv latest 3.13`), so a fresh clone works without activating anything.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PY313     ?= $(shell command -v python3.13 >/dev/null 2>&1 && python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null \
               || PYENV_VERSION=$$(pyenv latest 3.13 2>/dev/null) python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null)
PYTHON    := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
SAM_VENV  ?= .venv-sam
SAM       := $(SAM_VENV)/bin/sam
# sam build resolves the runtime interpreter as `python3.13` on PATH.
SAM_PATH  := $(dir $(PY313)):$(PATH)

.PHONY: help venv run test lint typecheck pytest chaos bench build validate clean

help: ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -n "$(PY313)" || { echo "Python 3.13 not found: install it (pyenv install 3.13) or put python3.13 on PATH" >&2; exit 1; }
	test -x $(PYTHON) || $(PY313) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## Create or update the virtual environment

run: $(STAMP) ## Run the whole pipeline locally (moto server, sample site, fake X); ARGS="--new-upload" adds one upload
	$(VENV)/bin/bmsuploader run-local $(ARGS)

test: lint typecheck pytest ## Lint, type-check and run every test (what CI runs)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PYTHON) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

N    ?= 300
SEED ?= 1
chaos: $(STAMP) ## Seeded fault schedule against the real handlers: N=300 SEED=1 [CHAOS_ARGS="--without budget"]
	$(PYTHON) -m bmsuploader_local.chaos --schedules $(N) --seed $(SEED) $(CHAOS_ARGS)

bench: $(STAMP) ## Print API calls per run, import time and package size
	$(PYTHON) scripts/bench.py

$(SAM): 
	test -x $(SAM) || $(PY313) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet aws-sam-cli

validate: $(SAM) ## sam validate --lint (offline cfn-lint)
	$(SAM) validate --lint

build: $(SAM) ## sam build (no Docker needed; downloads arm64 wheels)
	PATH="$(SAM_PATH)" $(SAM) build

clean: ## Remove build output and caches
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .local-run
