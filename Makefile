# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench clean

$(VENV)/.runtime: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit("Ringmaster needs Python 3.11 or newer (set PYTHON=...)" if sys.version_info < (3, 11) else 0)'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

## run: the whole system on this machine (server, worker, beat) in the foreground; Ctrl-C stops it.
run: $(VENV)/.runtime
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py ensure_admin --url http://$(HOST):$(PORT)/admin/
	@echo "Ringmaster: http://$(HOST):$(PORT)/dashboard/  (admin: http://$(HOST):$(PORT)/admin/)"
	@echo "Chaos: $(PY) manage.py chaos --kill node-2   (then --restart node-2; also --pause / --resume)"
	RINGMASTER_DEMO=$${RINGMASTER_DEMO:-1} RM_HOST=$(HOST) RM_PORT=$(PORT) exec $(VENV)/bin/honcho start -f Procfile

## test: the whole suite, on PostgreSQL + Redis and on the embedded default.
test: $(VENV)/.dev
	$(PY) -m tests.run $(ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(PY) manage.py makemigrations --check --dry-run

bench: $(VENV)/.dev
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	@echo "Run a benchmark: $(PY) benchmarks/bench_ring.py (see README)"

clean:
	rm -rf $(VENV) var
