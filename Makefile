# monbridge build / test plumbing.
#   make venv    - create .venv and install Python deps (only when requirements.txt/pyproject.toml change)
#   make js      - npm ci (only when package-lock.json changes) + npm run build
#   make test    - run the test suite; extra args: make test PYTEST_ARGS="-k foo"
#   make demo    - run examples/minimal.py with MON=1 (override: make demo MON=0)
#   make bench   - run the ring benchmark, JSON output
#   make clean   - remove .venv, node_modules and build outputs

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DELETE_ON_ERROR:
.SUFFIXES:
MAKEFLAGS += --no-builtin-rules --no-print-directory
.DEFAULT_GOAL := test

PYTHON      ?= python3
NPM         ?= npm
VENV        := .venv
VPY         := $(VENV)/bin/python
PY_STAMP    := $(VENV)/.installed
NODE_STAMP  := node_modules/.installed
PYTEST_ARGS ?=

.PHONY: venv js test demo bench clean screenshots

# --- Python ------------------------------------------------------------------

venv: $(PY_STAMP)

$(VENV)/pyvenv.cfg:
	@echo "monbridge: creating virtualenv $(VENV) with $(PYTHON) ..."
	$(PYTHON) -m venv $(VENV)

# Re-installs only when requirements.txt or pyproject.toml is newer than the stamp
# (or the venv was just created). The stamp is written last, so a failed install retries.
$(PY_STAMP): $(VENV)/pyvenv.cfg requirements.txt pyproject.toml
	@echo "monbridge: installing Python packages into $(VENV) ..."
	$(VPY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@echo "monbridge: installing monbridge (editable) into $(VENV) ..."
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

# --- JavaScript --------------------------------------------------------------

js: $(NODE_STAMP)
	@echo "monbridge: building web UI ..."
	$(NPM) run --silent build

# npm ci wipes node_modules (and the stamp) first; node_modules may not exist
# when there are no dependencies, hence mkdir -p.
$(NODE_STAMP): package-lock.json package.json
	@echo "monbridge: installing JS packages (npm ci) ..."
	$(NPM) ci --no-audit --no-fund
	@mkdir -p node_modules
	@touch $@

# --- Tasks -------------------------------------------------------------------

test: venv js
	@echo "monbridge: running web UI unit tests ..."
	$(NPM) test --silent
	@echo "monbridge: running tests ..."
	$(VPY) -m pytest $(PYTEST_ARGS)

demo: venv js
	@echo "monbridge: running the demo device examples/robot_arm.py (Ctrl-C stops it) ..."
	MON=$${MON:-1} $(VPY) examples/robot_arm.py

bench: venv
	@echo "monbridge: running ring benchmark ..."
	$(VPY) -m bench.ring --json

clean:
	@echo "monbridge: removing .venv, node_modules and build outputs ..."
	rm -rf $(VENV) node_modules build dist webui/static .pytest_cache test-artifacts
	find . -path ./.git -prune -o -name '*.egg-info' -prune -exec rm -rf {} + \
	       -o -name __pycache__ -prune -exec rm -rf {} +

screenshots: venv js
	@echo "monbridge: screenshots of every dashboard tab (demo device + headless chromium) ..."
	$(VPY) tools/screenshots.py --readme
