# monbridge build / test plumbing.
#   make venv    - create .venv and install Python deps (only when requirements.txt/pyproject.toml change)
#   make js      - npm ci (only when package-lock.json changes) + npm run build
#   make test    - run the test suite; extra args: make test PYTEST_ARGS="-k foo"
#   make demo    - run examples/minimal.py with MON=1 (override: make demo MON=0)
#   make bench   - run the ring benchmark, JSON output
#   make dist    - build the wheel and the sdist into dist/ (the web UI built in)
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
NODE_MAJOR  := 20
CHROMIUM    ?= chromium

.PHONY: venv js test demo bench dist clean screenshots check-python check-node check-chromium check-redis

# --- What the machine must have: one line naming the package when it lacks it ----

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || { \
	  echo "monbridge: needs Python >= 3.10 as '$(PYTHON)' (Debian: apt-get install python3; or make PYTHON=python3.11)" >&2; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  echo "monbridge: Python's venv module is missing: apt-get install python3-venv" >&2; exit 1; }

check-node:
	@command -v node >/dev/null 2>&1 && command -v $(NPM) >/dev/null 2>&1 || { \
	  echo "monbridge: needs Node $(NODE_MAJOR) or newer with npm (Debian: apt-get install nodejs npm)" >&2; exit 1; }
	@node -e 'process.exit(+process.versions.node.split(".")[0] < $(NODE_MAJOR) ? 1 : 0)' || { \
	  echo "monbridge: needs Node $(NODE_MAJOR) or newer, found $$(node --version) (https://nodejs.org, or NodeSource's Debian packages)" >&2; exit 1; }

# Browser tests are never skipped in `make test`: no chromium stops it here with the fix.
check-chromium:
	@command -v $(CHROMIUM) >/dev/null 2>&1 || { \
	  echo "monbridge: the browser tests need Debian's chromium: sudo apt-get install chromium (or run bash .ci/run, which installs it)" >&2; exit 1; }

# The fleet tests start their own redis-server (tests/redis_support.py); none runs as a service.
check-redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "monbridge: the fleet tests need Debian's redis-server: sudo apt-get install redis-server (or run bash .ci/run, which installs it)" >&2; exit 1; }

# --- Python ------------------------------------------------------------------

venv: check-python $(PY_STAMP)

$(VENV)/pyvenv.cfg:
	@echo "monbridge: creating virtualenv $(VENV) with $(PYTHON) ..."
	$(PYTHON) -m venv $(VENV)

# Re-installs only when requirements.txt or pyproject.toml is newer than the stamp
# (or the venv was just created). The stamp is written last, so a failed install retries.
$(PY_STAMP): $(VENV)/pyvenv.cfg requirements.txt pyproject.toml
	@echo "monbridge: installing monbridge (editable) and its client and test extras into $(VENV) ..."
	$(VPY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

# --- JavaScript --------------------------------------------------------------

js: check-node $(NODE_STAMP)
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

test: check-chromium check-redis venv js
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

# The sdist first, then the wheel built from it (python -m build's default), so a file the
# sdist lacks fails here rather than for a user. Needs the built web UI (make js).
dist: venv js
	@echo "monbridge: building the sdist and the wheel into dist/ ..."
	rm -rf dist build
	$(VPY) -m build --outdir dist .
	@ls -l dist

clean:
	@echo "monbridge: removing .venv, node_modules and build outputs ..."
	rm -rf $(VENV) node_modules build dist webui/static bridge/static .pytest_cache test-artifacts
	find . -path ./.git -prune -o -name '*.egg-info' -prune -exec rm -rf {} + \
	       -o -name __pycache__ -prune -exec rm -rf {} +

screenshots: venv js
	@echo "monbridge: screenshots of every dashboard tab (demo device + headless chromium) ..."
	$(VPY) tools/screenshots.py --readme
