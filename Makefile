# The two commands of the README: `make demo` runs the product, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
ADDR ?= 127.0.0.1:8000
# pyenv keeps other Pythons off PATH; the test matrix needs 3.11 and 3.13.
PYENV_VERSION ?= $(shell pyenv versions --bare 2>/dev/null | grep -E '^3\.(11|13)\.[0-9]+$$' | sort -V | paste -sd: -)
export PYENV_VERSION

.PHONY: demo test lint test-time-long chaos bench bench-placements wheel clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt nox uv
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/python manage.py migrate --no-input
	$(VENV)/bin/python manage.py shell -c "from config.demo import ensure_admin; ensure_admin()"
	$(VENV)/bin/python manage.py runscheduler & scheduler=$$!; \
	trap 'kill $$scheduler 2>/dev/null; wait $$scheduler' EXIT INT TERM; \
	$(VENV)/bin/python manage.py runserver $(ADDR)

test: $(VENV)/.installed
	$(VENV)/bin/nox

lint: $(VENV)/.installed
	$(VENV)/bin/nox -s lint

# The cron property tests against cronsim with many random examples (CI runs a small fixed set).
test-time-long: $(VENV)/.installed
	HYPOTHESIS_PROFILE=long $(VENV)/bin/nox -s "tests(3.11-django5.2-sqlite)" -- tests/test_time_properties.py

# The randomized fault suite alone, long (README, Reliability): make chaos DATABASE=postgres SECONDS=600,
# SEED=... to replay a run. DATABASE is sqlite, postgres or mariadb (POSTGRES_URL / MARIADB_URL apply).
DATABASE ?= postgres
SECONDS ?= 600
SEED ?=
chaos: $(VENV)/.installed
	SCHEDULING_CHAOS_SECONDS=$(SECONDS) SCHEDULING_CHAOS_SEED=$(SEED) \
		$(VENV)/bin/nox -s "tests(3.11-django5.2-$(DATABASE))" -- tests/test_chaos.py -m processes

# Ours against the stock django-apscheduler pattern on SQLite, PostgreSQL and MariaDB (see README,
# Benchmark); e.g. make bench BENCH_ARGS="--databases sqlite --quick". MariaDB needs mysqlclient.
bench: $(VENV)/.installed
	$(VENV)/bin/python -m pip install --quiet -r requirements-mysql.txt
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

# Executions/s by where jobs run (threads, process pool, 1, 2 and 4 task workers, 2 RQ and 2 Celery
# workers), on PostgreSQL, Redis and RabbitMQ; it needs django-tasks-db and django-tasks-rq, before
# Django 6 the django-tasks backport, and from Python 3.12 and Django 6 django-tasks-celery.
bench-placements: $(VENV)/.installed
	$(VENV)/bin/python -m pip install --quiet "django-tasks-db>=0.13" "django-tasks-rq>=0.12" \
		$$($(VENV)/bin/python -c 'import django, sys; print("django-tasks>=0.12" if django.VERSION < (6,) \
		else "django-tasks-celery[celery]>=0.1.1" if sys.version_info >= (3, 12) else "")')
	$(VENV)/bin/python -m bench.placements $(BENCH_ARGS)

# The app alone, to install in another site: dist/django_scheduling-*.whl. Earlier builds go first:
# setuptools would reuse a stale *.egg-info's file list, and pip would see two wheels in dist/.
wheel: $(VENV)/.installed
	rm -rf build dist *.egg-info
	$(VENV)/bin/uv build

clean:
	rm -rf $(VENV) .nox db.sqlite3* test-db.sqlite3* build dist *.egg-info
