# frameserve: two commands set everything up on a fresh Debian 12 machine with Python 3.11.
#   make serve   install, prepare the default repository, serve it
#   make test    install, lint, type-check, run the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
REPO   ?= ./models
PERF_ANALYZER_DIR ?= .tools/perf_analyzer
STAMP  := $(VENV)/.installed

.PHONY: setup serve test lint typecheck unit perf-analyzer proto bench clean wheel wheelhouse lock \
	system-deps
UV_VENV := .tools/uv

setup: $(STAMP) $(REPO)/.frameserve-example $(REPO)/.frameserve-zoo.json

# Reinstall only when the lock file or the package metadata changed. requirements.lock is the
# whole closure of the package with every extra, the dev tools and the test references
# (tests/requirements/reference.in), so pip installs it --no-deps: trackers (a ByteTrack
# reference in the tests) asks for opencv-python (GUI build, needs libGL), which the lock leaves
# out (uv --no-emit-package) because opencv-python-headless provides the same cv2.
# requirements-runtime.lock is the plain `pip install frameserve` closure at the same pins.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip==25.3"
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Two small example models made with onnx.helper (the quick start's tensors) ...
$(REPO)/.frameserve-example: $(STAMP) src/frameserve/tools/example_models.py
	$(BIN)/frameserve zoo examples --dest $(REPO)
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

# What the system tests need from Debian (haproxy for the load-balancer test, chromium for the
# dashboard in a browser, mosquitto for MQTT push): installed with
# apt-get only when missing (one apt-get update first), so a second run changes nothing.
SYSTEM_PACKAGES := haproxy chromium mosquitto
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: setup lint typecheck perf-analyzer wheelhouse system-deps
	FRAMESERVE_PERF_ANALYZER=$(abspath $(PERF_ANALYZER_DIR))/perf_analyzer \
	  FRAMESERVE_WHEELHOUSE=$(abspath .wheels) \
	  $(BIN)/python -m pytest -q -p no:cacheprovider

# The package: dist/frameserve-<version>-py3-none-any.whl (pip install it anywhere).
wheel: $(STAMP)
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w dist .

# The runtime dependencies' wheels (pip's cache makes this quick after setup): the install test
# puts the built wheel into a clean virtualenv from here with --no-index.
wheelhouse: .wheels/.complete
.wheels/.complete: requirements-runtime.lock $(STAMP)
	$(BIN)/python -m pip download -q --no-deps --require-hashes --only-binary=:all: \
	  -r requirements-runtime.lock -d .wheels
	touch $@

# Re-resolve both locks after a change to pyproject.toml's dependencies (needs PyPI).
lock:
	test -x $(UV_VENV)/bin/uv || ($(PYTHON) -m venv $(UV_VENV) && $(UV_VENV)/bin/pip install -q uv==0.13.8)
	$(UV_VENV)/bin/uv pip compile pyproject.toml tests/requirements/reference.in --extra dev \
	  --python-version 3.11 --generate-hashes --no-emit-package opencv-python -o requirements.lock
	$(UV_VENV)/bin/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes \
	  --constraint requirements.lock -o requirements-runtime.lock

# Regenerate the gRPC stubs from the vendored KServe/Triton protos (needs grpcio-tools).
proto: $(STAMP)
	$(BIN)/python scripts/generate_protos.py

bench: setup perf-analyzer
	$(BIN)/python benchmarks/serving/run.py

clean:
	rm -rf $(VENV) .tools .wheels dist build
