# keymeta — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PROCESSES ?= web worker-audit worker-webhooks worker-keys beat
BENCH_BACKEND ?= embedded
FAULTS_BACKEND ?= embedded

export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run db-stop test lint unit bench faults clean audit-deps lock

# With KEYMETA_DATABASE_URL unset the database is the embedded PostgreSQL server under ./var/: whatever starts
# it (`keymeta db upgrade` here) leaves it running, so every recipe that may start it stops it on its way out.
STOP_EMBEDDED_DB = [ -n "$$KEYMETA_DATABASE_URL" ] || $(BIN)/keymeta db stop >/dev/null

# Every dependency (dev included) pinned with hashes in requirements.lock; keymeta itself without deps.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Ctrl-C (or any failure) ends honcho and its processes, then the embedded server: no process is left behind.
# A second `make run` starts the server again on the same data.
run: install  ## migrate, bootstrap demo data, start every process of the Procfile on ./var/
	@trap '$(STOP_EMBEDDED_DB)' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; \
	$(BIN)/keymeta db upgrade && $(BIN)/keymeta bootstrap --demo && $(BIN)/honcho start $(PROCESSES)

db-stop: install  ## stop the embedded PostgreSQL server of ./var/ (`make run` stops it when it ends)
	$(BIN)/keymeta db stop

lint: install
	$(BIN)/ruff check --output-format concise .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Known vulnerabilities in the pinned set, from PyPI's advisory data, where the index reachable from here serves
# it: a probe asks for a release with published advisories (jinja2 2.10). Where none come back (no network, or
# a mirror without advisory data) the target says the set was NOT checked instead of failing on every package.
# `make test` runs it, so a reachable advisory database gates every run.
ADVISORY_PROBE = import json, urllib.request; \
  json.load(urllib.request.urlopen("https://pypi.org/pypi/jinja2/2.10/json", timeout=5))["vulnerabilities"][0]
audit-deps: install
	@if $(BIN)/python -c '$(ADVISORY_PROBE)' >/dev/null 2>&1; then \
	  echo "audit-deps: checking requirements.lock against PyPI's advisory data"; \
	  $(BIN)/pip-audit --strict --require-hashes --disable-pip -r requirements.lock; \
	else \
	  echo "audit-deps: NOT CHECKED: no advisory data reachable from here (pypi.org's vulnerability feed did not answer)"; \
	fi

# Re-pin after editing pyproject.toml (Python 3.11, hashes, dev extra included).
lock: install
	$(BIN)/pip-compile -q --generate-hashes --extra dev --no-strip-extras --no-emit-index-url --no-emit-find-links --allow-unsafe -o requirements.lock pyproject.toml

test: lint audit-deps  ## the whole suite; pytest's "no tests collected" (exit 5) is a failure
	$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: install  ## every figure in one run: BENCH_BACKEND=embedded|postgres-rabbitmq|postgres-redis
	$(BIN)/python -m bench.all --backend $(BENCH_BACKEND) $(BENCH_ARGS)

# Each fault on a stack of its own under a steady load of creates: one table row and one picture (docs/faults/) per
# scenario; a fault the machine cannot inject is reported "not run" with its reason (docs/faults.md).
faults: install  ## the fault bench: FAULTS_BACKEND=embedded|postgres-rabbitmq, FAULTS_ARGS="--scenario NAME --short"
	$(BIN)/python -m bench.faults --backend $(FAULTS_BACKEND) $(FAULTS_ARGS)

# The embedded servers (./var/ and the suite's ./var/test-postgres) stop first: a server whose data directory
# is deleted under it keeps running.
clean:
	-test ! -x $(BIN)/keymeta || { $(STOP_EMBEDDED_DB); }
	-test ! -x $(BIN)/keymeta || KEYMETA_DATABASE_URL= KEYMETA_VAR_DIR=var/test-postgres $(BIN)/keymeta db stop >/dev/null
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
