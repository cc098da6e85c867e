VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: venv test demo bench

# Idempotent: the venv is created once, but the editable install always runs
# so that newly added dependencies land. torch is pinned and installed first
# so that pip resolves the CPU wheel instead of pulling CUDA packages.
venv:
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[test,bench]'

test: venv
	$(PYTHON) -m pytest -q -p no:cacheprovider

demo: venv
	$(VENV)/bin/fnattr demo --out demo_out

bench: venv
	$(PYTHON) -m benchmarks.run
