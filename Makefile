# Two commands: `make run` serves the product, `make test` runs every check.
# Everything installs into .venv from pyproject.toml, pinned by requirements/constraints.txt.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FLASK  := $(BIN)/flask --app intake
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check -c requirements/constraints.txt
HOST   ?= 127.0.0.1
PORT   ?= 5000
# pip prints harmless "Location ... is ignored" lines on this machine kind; keep the log readable.
# With pipefail, a failing pip still fails the recipe.
QUIET_PIP := 2>&1 | { grep -v "is ignored" || true; }

.PHONY: run test lint typecheck security deps-audit pytest setup translations clean node_modules

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)

CATALOGS := $(wildcard intake/translations/*/LC_MESSAGES/messages.po)
COMPILED := $(CATALOGS:.po=.mo)

$(VENV)/.installed-run: pyproject.toml requirements/constraints.txt | $(BIN)/python
	$(PIP) -e . $(QUIET_PIP)
	@$(BIN)/python -c 'import intake' && touch $@

# Compiled catalogs are build output (.gitignore'd): made from the .po files by every setup.
%.mo: %.po $(VENV)/.installed-run
	$(BIN)/pybabel compile -i $< -o $@ 2>&1 | { grep -v "^compiling" || true; }

$(VENV)/.installed-test: pyproject.toml requirements/constraints.txt | $(BIN)/python
	$(PIP) -e '.[test,dev]' $(QUIET_PIP)
	@$(BIN)/python -c 'import intake, pytest, playwright, axe_playwright_python, hypothesis, psycopg, mypy, bandit' \
		&& touch $@ $(VENV)/.installed-run

setup: $(VENV)/.installed-run $(COMPILED)

# The Nu HTML checker for tests/test_html_valid.py: vnu-jar, pinned by package-lock.json, run with
# the system Java. --ignore-scripts: its postinstall would download a Java runtime we don't need.
# Without npm (outside CI) it is left out and that test skips; .ci/run installs npm and Java.
NODE_TOOLS := $(if $(shell command -v npm 2>/dev/null),node_modules/.installed)

node_modules: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

## make translations: re-extract messages.pot and merge new strings into each catalog
translations: $(VENV)/.installed-run
	$(BIN)/pybabel extract -F babel.cfg -k _l --no-location --sort-output --project Intake \
		-o intake/translations/messages.pot .
	$(BIN)/pybabel update --ignore-obsolete -i intake/translations/messages.pot -d intake/translations

## make run: set up a development instance (once) and serve it at http://$(HOST):$(PORT)
run: setup
	$(FLASK) dev init
	@echo "Serving Intake at http://$(HOST):$(PORT)  (Ctrl-C stops it)"
	$(FLASK) run --host $(HOST) --port $(PORT) --with-threads --no-reload

## make test: lint, type-check, security lint, the dependency vulnerability check, then the whole
## suite on SQLite and PostgreSQL with a real browser
test: lint typecheck security deps-audit pytest

lint: $(VENV)/.installed-test $(COMPILED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# bandit, configured in pyproject.toml ([tool.bandit]): nothing is skipped globally; each false
# positive is marked `# nosec BXXX` at its line with the reason. -q: silent when clean.
security: $(VENV)/.installed-test
	$(BIN)/bandit -q -r intake -c pyproject.toml

# Dependency vulnerability check of every pin in requirements/constraints.txt, OFFLINE (CI has no
# network but the package registries): safety 2.3.5 against the advisory database that the
# safety-db package ships, both pinned in requirements/deps-audit.txt. A finding fails the build.
# - Why these: pip-audit and safety 3 need their online services (safety 3 stops at start-up
#   without them); no registry package ships a current advisory database for PyPI.
# - HOW WEAK IT IS: safety-db's snapshot is dated 2021-07-01 and is no longer updated. It knows
#   no advisory published since, so it catches only a pin that falls back to a version known
#   vulnerable by mid-2021; it says nothing about today's pins. The date and age are printed on
#   each run. Run a networked scanner before each release (docs/operations.md, "Dependencies").
# - Its own venv (.venv-audit): safety 2.3.5 needs packaging<22, which the app's pins cannot have.
# - safety-db's data is licensed CC BY-NC-SA 4.0 (non-commercial use).
AUDIT_VENV := .venv-audit
SAFETY_DB = $$($(AUDIT_VENV)/bin/python -c \
	'import importlib.util as u; print(u.find_spec("safety_db").submodule_search_locations[0])')
DB_DATE := import json, sys, datetime as d; \
	t = d.datetime.fromtimestamp(json.load(open(sys.argv[1] + "/insecure_full.json"))["$$meta"]["timestamp"], d.UTC); \
	age = (d.datetime.now(d.UTC) - t).days; \
	print(f"deps-audit: advisory database safety-db, dated {t:%Y-%m-%d} ({age} days old): a weak check, blind to every advisory since")

$(AUDIT_VENV)/.installed: requirements/deps-audit.txt
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/deps-audit.txt $(QUIET_PIP)
	@$(AUDIT_VENV)/bin/safety --version >/dev/null && touch $@

AUDIT_REQUIREMENTS ?= requirements/constraints.txt

# Quiet when clean (two lines); the full report on a finding.
deps-audit: $(AUDIT_VENV)/.installed
	@db=$(SAFETY_DB); $(AUDIT_VENV)/bin/python -c '$(DB_DATE)' "$$db"; \
	report=$$($(AUDIT_VENV)/bin/safety --disable-optional-telemetry-data check --db "$$db" \
		-r $(AUDIT_REQUIREMENTS) --full-report --output text) || { echo "$$report"; exit 1; }; \
	echo "deps-audit: $(AUDIT_REQUIREMENTS): $$(echo "$$report" | grep -o 'scanned [0-9]* packages'), none with a known vulnerability"

pytest: $(VENV)/.installed-test $(COMPILED) $(NODE_TOOLS)
	status=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: treating that as a failure"; exit 1; fi; \
	exit $$status

clean:
	rm -rf $(VENV) $(AUDIT_VENV) .pytest_cache .mypy_cache .ruff_cache test-results node_modules
