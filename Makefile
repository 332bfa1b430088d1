# hotelbot.ops — developer entry points. `make demo` and `make test` install what is
# missing first (a venv in .venv, Debian's prometheus and PostgreSQL server packages).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: setup system-deps demo test unit integration sanity sanity-core221 sanity-core220 lint molecule changelog build sandbox-up sandbox-down bench clean

setup: $(STAMP) system-deps .collections/ansible_collections/hotelbot/ops

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

# Debian packages: the real Prometheus server, the PostgreSQL server binaries, and
# shellcheck (ansible-test sanity skips its shell checks without it).
system-deps:
	@missing=""; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

.collections/ansible_collections/hotelbot/ops:
	mkdir -p .collections/ansible_collections/hotelbot
	ln -sfn ../../.. $@

# ---------------------------------------------------------------- the sandbox and the demo
sandbox-up: setup
	$(BIN)/python -m sandbox up

sandbox-down:
	@[ -x $(BIN)/python ] && $(BIN)/python -m sandbox down || true

demo: setup
	$(BIN)/python -m sandbox.demo

# ---------------------------------------------------------------- tests
test: setup
	@set -o pipefail; status=0; \
	for step in unit integration sanity sanity-core221 lint molecule build; do \
	  echo "=== make $$step"; start=$$(date +%s); \
	  $(MAKE) --no-print-directory $$step || { status=1; echo "=== make $$step FAILED"; }; \
	  echo "=== make $$step took $$(( $$(date +%s) - start ))s"; \
	done; exit $$status

unit: setup
	$(BIN)/python -m pytest tests/unit -q -p no:cacheprovider

integration: setup
	$(BIN)/python -m pytest tests/integration -q -p no:cacheprovider

sanity: setup
	tests/sanity/run.sh

# ansible-test sanity on the newer cores, each in its own venv with ansible-core from PyPI
# (2.20 and 2.21 need Python >= 3.12: pyenv's, or python3.13/python3.12 on PATH).
PYENV_ROOT ?= $(HOME)/.pyenv
PYTHON313 ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/3.13*/bin/python3.13) $(shell command -v python3.13))
PYTHON312 ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/3.12*/bin/python3.12) $(shell command -v python3.12))

.venv-core221/.installed:
	@[ -n "$(firstword $(PYTHON313) $(PYTHON312))" ] || { echo "sanity-core221 needs Python 3.13 or 3.12 (pyenv install 3.13, or set PYTHON313=...)"; exit 2; }
	$(firstword $(PYTHON313) $(PYTHON312)) -m venv .venv-core221
	.venv-core221/bin/python -m pip install -q --disable-pip-version-check 'ansible-core>=2.21,<2.22'
	touch $@

.venv-core220/.installed:
	@[ -n "$(firstword $(PYTHON312) $(PYTHON313))" ] || { echo "sanity-core220 needs Python 3.12 or 3.13 (pyenv install 3.12, or set PYTHON312=...)"; exit 2; }
	$(firstword $(PYTHON312) $(PYTHON313)) -m venv .venv-core220
	.venv-core220/bin/python -m pip install -q --disable-pip-version-check 'ansible-core>=2.20,<2.21'
	touch $@

sanity-core221: setup .venv-core221/.installed
	SANITY_VENV=.venv-core221 tests/sanity/run.sh

sanity-core220: setup .venv-core220/.installed
	SANITY_VENV=.venv-core220 tests/sanity/run.sh

lint: setup
	$(BIN)/ansible-lint --offline -q
	$(BIN)/antsibull-changelog lint

# Fold the fragments in changelogs/fragments into the release galaxy.yml names (new or
# already released) and regenerate CHANGELOG.rst.
changelog: setup
	$(BIN)/antsibull-changelog release --version $$(sed -n 's/^version: *//p' galaxy.yml) --update-existing

molecule: setup
	@set -e; for scenario in extensions/molecule/*/molecule.yml; do \
	  $(BIN)/molecule test -s $$(basename $$(dirname $$scenario)); \
	done

# The tarball builds without the sandbox/tests, installs, and its modules resolve by FQCN.
build: setup
	tests/build/check_tarball.sh

bench: setup
	$(BIN)/python benchmarks/ecs_rollback.py

clean: sandbox-down
	rm -rf .sandbox tests/output *.tar.gz
