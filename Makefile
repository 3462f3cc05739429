# Every target sets up .venv on a fresh machine: the pinned CPU torch first, then the package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test test-fast lint bench-extract bench-probe clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/emoprobe demo --out demo-output

test: $(STAMP)
	$(BIN)/ruff check emoprobe tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

test-fast: $(STAMP)
	$(BIN)/ruff check emoprobe tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check emoprobe tests benchmarks

bench-extract: $(STAMP)
	$(BIN)/python benchmarks/bench_extract.py --out benchmarks/results/extract.json

bench-probe: $(STAMP)
	$(BIN)/python benchmarks/bench_probe.py --out benchmarks/results/probe.json

clean:
	rm -rf demo-output build *.egg-info
