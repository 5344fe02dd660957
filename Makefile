# The two commands a new user runs. Each installs what it needs into .venv first (scripts/setup.sh).
PY := .venv/bin/python
OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m edgekit demo --out $(OUT)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Skip the slow tests (training end to end, DDP) while iterating.
test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
