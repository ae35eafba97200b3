# The two commands of the quick start: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
PYTEST_ARGS ?=

.PHONY: install browser run test test-sqlite test-postgres lint clean

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the browser tests and nginx for the compose proxy's
# tests; without them (not root, no apt) those tests skip and say why.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver -a -x /usr/sbin/nginx || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver nginx-light >/dev/null) || \
	  echo "chromium or nginx not installed: tests/site/test_browser.py or the proxy tests of test_slow_clients.py will skip"

run: install
	$(PY) manage.py serve --port $(PORT)

# The whole suite on the embedded default (SQLite), then on PostgreSQL.
test: test-sqlite test-postgres

test-sqlite: install browser
	@echo "== test suite on SQLite =="
	DATABASE_URL= $(PY) -m pytest $(PYTEST_ARGS)

# Less the `served` tests: they start `manage.py serve` as `make run` does, on
# its own SQLite database, so the database under test never reaches them.
test-postgres: install browser
	@echo "== test suite on PostgreSQL ($(TEST_DATABASE_URL)) =="
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest -m "not served" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) var .pytest_cache
