# `make run` and `make test` each set up their own virtualenv from the pinned
# requirements; nothing but Python 3 and make is needed on the machine.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

# Development defaults; a local .env (not committed) may override them.
LOAD_ENV := set -a; . ./.env.example; if [ -f .env ]; then . ./.env; fi; set +a

.PHONY: run test venv migrate demo manage lint clean bench lock

# requirements-dev.txt is a superset of the runtime lock (see requirements-dev.in),
# so one hashed install brings everything; the project itself has no pins of its own.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Resolves requirements.in (runtime) and requirements-dev.in (runtime + tools) into
# the hashed locks, from PyPI alone so that the hashes are PyPI's own. Versions already
# in a lock are kept; pass e.g. LOCK_ARGS="--upgrade-package celery" to move one.
UV_COMPILE := env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL $(VENV)/bin/uv pip compile --quiet \
	--no-config --index-url https://pypi.org/simple --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" $(LOCK_ARGS)
lock: $(STAMP)
	$(UV_COMPILE) requirements.in -o requirements.txt
	$(UV_COMPILE) requirements.in requirements-dev.in -o requirements-dev.txt

migrate: $(STAMP)
	@$(LOAD_ENV); $(PY) manage.py migrate --noinput

# The demo's email channel prints each message in the worker's output (console backend, .env.example);
# the SSH CA is made here because GET /api/v1/ca/ssh/ never makes one (init is idempotent).
demo: migrate
	@$(LOAD_ENV); $(PY) manage.py apply -f demo/policy.yaml && $(PY) manage.py email_channel demo-email
	@$(LOAD_ENV); $(PY) manage.py ssh_ca init

# Any manage.py command with the development defaults, e.g.
#   make manage ARGS="apply -f demo/policy.yaml"
# (production sets the variables in the environment and runs manage.py itself).
# The development database is brought up to date first, quietly.
manage: $(STAMP)
	@$(LOAD_ENV); $(PY) manage.py migrate --noinput -v 0 && $(PY) manage.py $(ARGS)

run: demo
	@$(LOAD_ENV); \
	echo ""; \
	echo "  jitportal is starting on http://$(HOST):$(PORT)/"; \
	echo "  API docs:  http://$(HOST):$(PORT)/api/docs/"; \
	echo "  Admin:     http://$(HOST):$(PORT)/admin/"; \
	echo ""; \
	echo "  Demo logins (from demo/policy.yaml):"; \
	sed -n 's/^# login: /    /p' demo/policy.yaml; \
	echo ""; \
	exec $(PY) -m jitportal.devserver --host $(HOST) --port $(PORT)

test: $(STAMP)
	@$(LOAD_ENV); unset DJANGO_DEBUG; $(PY) -m pytest $(PYTEST_ARGS)

# The quality gates CI runs before the tests (.ci/run): ruff's checks and format,
# mypy with the Django and DRF stubs (configured in pyproject.toml; the settings
# read the environment at import, hence LOAD_ENV), and no model change without
# its migration.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@$(LOAD_ENV); $(VENV)/bin/mypy
	@$(LOAD_ENV); $(PY) manage.py makemigrations --check --dry-run

bench: migrate
	@$(LOAD_ENV); unset DJANGO_DEBUG; $(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
