# Two entry points for a fresh machine (see README): `make quickstart` and `make test`.
# Both create .venv on first use, installing exactly the versions of requirements.lock; re-running
# skips the install while pyproject.toml and the lock are unchanged. `make lock` refreshes the lock.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
TEMPLATES := $(VENV)/.db-templates
LOCK := requirements.lock
PYTEST_ARGS ?=

.PHONY: quickstart test test-slow lint format clean lock

$(STAMP): pyproject.toml $(LOCK)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -c $(LOCK) --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c $(LOCK) -e ".[dev]"
	# Rewrite the project's own metadata: pip keeps an installed editable project's entry
	# points (the `mlflow.app` plugin loraflow-auth among them) when only pyproject changed.
	$(VENV)/bin/python -m pip install --quiet --no-deps --force-reinstall -e .
	$(VENV)/bin/python -m pip check
	touch $(STAMP)

# Empty Prefect and MLflow databases, migrated once per installed version and copied into each
# new state home (tasks/core/ops/templates.py): a first run does not wait for the migrations.
$(TEMPLATES): $(STAMP)
	$(VENV)/bin/python -m tasks.core.ops.templates
	touch $(TEMPLATES)

# Re-resolve every dependency of pyproject.toml (all extras) from scratch into requirements.lock,
# with the newest pip in a throwaway venv; review the printed changes, run `make test`, commit.
lock:
	$(PYTHON) infra/lock.py

quickstart: $(TEMPLATES)
	$(VENV)/bin/loraflow quickstart

# The 20 slowest tests are listed at the end: where the 10-minute budget goes (docs/operations.md).
test: $(TEMPLATES)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -n 2 --dist loadgroup --durations=20 $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf .loraflow
