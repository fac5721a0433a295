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
UV        := $(VENV)/bin/uv
STAMP     := $(VENV)/.installed
# uv installs the virtualenvs; its version is the one uv.lock pins (it is a dev dependency).
UV_VERSION = $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' uv.lock)
# The SAM CLI and checkov each pin boto3 exactly, so each has its own virtualenv (tools/*.lock).
# X's official twitter-text library (npm), the judge of the rendering tests; tests only.
ORACLE    := tests/twitter_text_js
ORACLE_STAMP := $(ORACLE)/node_modules/.installed
SAM_VENV  ?= .venv-sam
SAM       := $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.installed
CHECKOV_VENV  ?= .venv-checkov
CHECKOV       := $(CHECKOV_VENV)/bin/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
# sam build resolves the runtime interpreter as `python3.13` on PATH.
SAM_PATH  := $(dir $(PY313)):$(PATH)
BUILD_DIR := .aws-sam/build

.PHONY: help venv tools lock requirements run test lint checkov typecheck pytest chaos bench build validate clean

help: ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Exactly uv.lock (hashes checked); `--locked` fails if pyproject.toml changed without `make lock`.
$(STAMP): pyproject.toml uv.lock
	@test -n "$(PY313)" || { echo "Python 3.13 not found: install it (pyenv install 3.13) or put python3.13 on PATH" >&2; exit 1; }
	test -x $(PYTHON) || $(PY313) -m venv $(VENV)
	test -x $(UV) || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --quiet --locked --python $(PYTHON)
	touch $(STAMP)


# The IaC tools' virtualenvs, exactly their tools/*.lock (hashes checked).
$(SAM_VENV)/.installed: tools/sam.lock $(STAMP)
	test -x $(SAM_VENV)/bin/python || $(UV) venv --quiet --python $(PY313) $(SAM_VENV)
	$(UV) pip sync --quiet --python $(SAM_VENV)/bin/python --require-hashes tools/sam.lock
	touch $@

$(CHECKOV_VENV)/.installed: tools/checkov.lock $(STAMP)
	test -x $(CHECKOV_VENV)/bin/python || $(UV) venv --quiet --python $(PY313) $(CHECKOV_VENV)
	$(UV) pip sync --quiet --python $(CHECKOV_VENV)/bin/python --require-hashes tools/checkov.lock
	touch $@

tools: $(SAM_STAMP) $(CHECKOV_STAMP) ## Create the SAM CLI and checkov virtualenvs

lock: $(STAMP) ## Re-resolve uv.lock and tools/*.lock (after editing pyproject.toml or tools/*.in), then `make requirements`
	$(UV) lock
	for tool in sam checkov; do \
	  $(UV) pip compile --quiet --universal --python-version 3.13 --generate-hashes \
	    --custom-compile-command "make lock" tools/$$tool.in -o tools/$$tool.lock || exit 1; \
	done
	$(MAKE) requirements

requirements: $(STAMP) ## Write src/*/requirements.txt from uv.lock (each Lambda package's dependency group)
	$(PYTHON) scripts/requirements.py

$(ORACLE_STAMP): $(ORACLE)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(ORACLE) --no-audit --no-fund --loglevel=error && touch $(ORACLE_STAMP); \
	else echo "npm not found: the tests judged by X's official twitter-text library will be skipped" >&2; fi

venv: $(STAMP) $(ORACLE_STAMP) ## Create or update the virtual environment (exactly uv.lock) and the npm test judge

run: $(STAMP) ## Run the whole pipeline locally (moto server, sample site, fake X); ARGS="--new-upload" adds one upload
	$(VENV)/bin/bmsuploader run-local $(ARGS)

.PHONY: status
status: $(STAMP) ## What the last `make run` left: sources, queues, backlog, spend; ARGS="--json"
	$(VENV)/bin/bmsuploader status --local $(ARGS)

test: lint typecheck pytest ## Lint, type-check and run every test (what CI runs)

lint: $(STAMP) checkov
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Every skip is an inline `checkov:skip=ID:reason` comment on its resource in template.yaml.
checkov: $(CHECKOV_STAMP)
	$(CHECKOV) --file template.yaml --framework cloudformation --skip-download --compact --quiet

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The SAM CLI's virtualenv: tests/unit/test_transformed.py lints the SAM-transformed template with it.
pytest: $(STAMP) $(SAM_STAMP) $(ORACLE_STAMP)
	$(PYTHON) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

N    ?= 300
SEED ?= 1
chaos: $(STAMP) ## Seeded fault schedule against the real handlers: N=300 SEED=1 [CHAOS_ARGS="--without budget --destinations x,misskey"]
	$(PYTHON) -m bmsuploader_local.chaos --schedules $(N) --seed $(SEED) $(CHAOS_ARGS)

bench: $(STAMP) build ## Every performance budget side by side with its anchor: PASS/FAIL, exit 1 on a FAIL
	$(PYTHON) scripts/bench.py

validate: $(SAM_STAMP) ## sam validate --lint, then cfn-lint on the SAM-transformed template (both offline)
	$(SAM) validate --lint
	$(SAM_VENV)/bin/python scripts/sam_lint.py template.yaml

# Lambda's code folders are read-only: without .pyc in the package every cold start compiles every
# module it imports. unchecked-hash: the deployment zip keeps no timestamps to check them against.
build: $(SAM_STAMP) ## sam build (no Docker; arm64 wheels), then compile and check byte-code, print sizes
	PATH="$(SAM_PATH)" $(SAM) build
	$(PY313) -m compileall -q -f -j0 --invalidation-mode unchecked-hash $(BUILD_DIR)/*/
	$(PY313) scripts/check_build.py $(BUILD_DIR)

clean: ## Remove build output and caches
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis .local-run
