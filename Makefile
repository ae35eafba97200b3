# The two commands of the quick start: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
PYTEST_ARGS ?=

.PHONY: install run test test-sqlite test-postgres lint clean

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) manage.py serve --port $(PORT)

# The whole suite on the embedded default (SQLite), then on PostgreSQL.
test: test-sqlite test-postgres

test-sqlite: install
	@echo "== test suite on SQLite =="
	DATABASE_URL= $(PY) -m pytest $(PYTEST_ARGS)

test-postgres: install
	@echo "== test suite on PostgreSQL ($(TEST_DATABASE_URL)) =="
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
