# Set-up and entry points. `make demo` runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_QUIET := --quiet --disable-pip-version-check
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo lint test test-fast clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build (see constraints.txt).
	$(PY) -m pip install $(PIP_QUIET) -c constraints.txt torch==2.13.0 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install $(PIP_QUIET) -c constraints.txt -e '.[test]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import cecq, torch, prefect, ray, duckdb, s3fs, mteb, sentence_transformers"
	touch $@

install: $(VENV)/.installed

demo: install
	PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=180 $(PY) -m flows.demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install lint
	$(PY) -m pytest -q -ra tests

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow" tests

clean:
	rm -rf $(VENV) .pytest_cache demo-store
