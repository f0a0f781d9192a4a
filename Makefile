# keymeta — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PROCESSES ?= web worker-audit worker-webhooks worker-keys beat
BENCH_BACKEND ?= embedded

export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test lint unit bench clean audit-deps lock

# Every dependency (dev included) pinned with hashes in requirements.lock; keymeta itself without deps.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install  ## migrate, bootstrap demo data, start every process of the Procfile on ./var/
	$(BIN)/keymeta db upgrade
	$(BIN)/keymeta bootstrap --demo
	$(BIN)/honcho start $(PROCESSES)

lint: install
	$(BIN)/ruff check --output-format concise .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Known vulnerabilities in the pinned set, from PyPI's advisory data. --strict: a package that cannot be
# audited fails too. Not part of `make test`: the CI machines of this project reach a package mirror that
# serves no advisory data, where every package "cannot be audited". Run it where pypi.org answers.
audit-deps: install
	$(BIN)/pip-audit --strict --require-hashes --disable-pip -r requirements.lock

# Re-pin after editing pyproject.toml (Python 3.11, hashes, dev extra included).
lock: install
	$(BIN)/pip-compile -q --generate-hashes --extra dev --strip-extras --allow-unsafe -o requirements.lock pyproject.toml

test: lint  ## the whole suite; pytest's "no tests collected" (exit 5) is a failure
	$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: install  ## every figure in one run: BENCH_BACKEND=embedded|postgres-rabbitmq|postgres-redis
	$(BIN)/python -m bench.all --backend $(BENCH_BACKEND) $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
