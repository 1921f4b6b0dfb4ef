# Two commands set everything up on a fresh machine:
#   make demo   - export MobileVOS (TFLite + ONNX, verified) and profile it with the engine on the host
#   make test   - lint, type check and the test suite (slow and phone tests deselected)
# Both create what they need: Debian packages, the virtual environment, the host engine build,
# the streaming teacher (downloaded once into the cache, so no test touches the network).
#   make test-full - also the slow tests (full-size exports of every student)

SHELL  := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEBS   := cmake ninja-build g++ make nlohmann-json3-dev zlib1g-dev libssl-dev adb openjdk-17-jdk-headless curl \
          unzip clang libusb-1.0-0 chromium
KOTLINC := .cache/npm/node_modules/kotlin-compiler/bin/kotlinc
OUT    ?= out

.PHONY: demo test test-full check setup system-deps engine teacher clips clean fuzz

demo: setup engine teacher
	$(BIN)/mobdistill export --model mobilevos --out $(OUT)/mobilevos
	$(BIN)/mobdistill profile --artifact $(OUT)/mobilevos/mobilevos.manifest.json --out $(OUT)/profile

# Two pytest workers (pytest-xdist), each test file on one of them; the expensive session
# fixtures (tiny exports, the JNI/Kotlin build) are made once and shared (tests/support/shared.py).
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?= --durations=25
test: setup engine teacher clips $(KOTLINC) check
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not slow and not phone" \
	  $(PYTEST_ARGS)

test-full: setup engine teacher clips $(KOTLINC) check
	$(BIN)/python -m pytest -q -m "not phone"

# ruff (pycodestyle, pyflakes, import order) on everything, mypy on the library. The library's
# packages live in top-level folders mapped by setuptools, which mypy cannot follow through an
# editable install: it checks a tree of links laid out as the installed package.
TYPECHECK := build/typecheck
check: setup
	$(BIN)/ruff check .
	rm -rf $(TYPECHECK)/mobdistill && mkdir -p $(TYPECHECK)/mobdistill
	for f in mobdistill/*; do ln -s $(CURDIR)/$$f $(TYPECHECK)/mobdistill/; done
	for d in models export contract runtime server training experiments report; do \
	  ln -s $(CURDIR)/$$d $(TYPECHECK)/mobdistill/$$d; done
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p mobdistill

# The MediaPipe selfie teacher that streaming trains from, fetched once (sha256-checked).
teacher: setup
	$(BIN)/python -c "from mobdistill.server.teachers import fetch_selfie_model as f; print(f())"

# Every registry clip with a role (mobdistill/clips.py, docs/clips.md): the Debian opencv-doc
# ones are downloaded once into the cache (sha256-checked), so no test fetches anything.
# (apt-get download needs the package lists: a machine that never ran apt-get update gets one.)
FETCH_CLIPS := $(BIN)/python -c "from mobdistill import clips; \
  print(*(clips.clip_path(n) for n in clips.names()), sep='\n')"
clips: setup
	$(FETCH_CLIPS) || { apt-get update -qq && $(FETCH_CLIPS); }

setup: system-deps $(VENV)/.installed

# Debian packages the engine build and the ADB tests need (skipped when already present). npm and
# Python's venv are judged by whether they work, not by dpkg: a machine may have them from
# elsewhere (nvm, pyenv), and Debian's npm would conflict with those.
system-deps:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	$(PYTHON) -c "import ensurepip, venv" >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]' 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -c "import mobdistill, litert_torch, ai_edge_litert, onnxruntime"
	touch $@

# kotlinc (npm kotlin-compiler) compiles the Android library's JVM-only Kotlin in the tests.
$(KOTLINC):
	npm install --silent --no-audit --no-fund --prefix .cache/npm kotlin-compiler@2.4.20

engine: setup
	$(BIN)/python -c "from mobdistill.runtime.engine import build_host_engine; print(build_host_engine())"

# The update decoder's libFuzzer target (ASan/UBSan, clang) with inputs up to 2 MiB and the record
# dictionary, for FUZZ_SECONDS; records the run in benchmarks/results/fuzz_update.json.
FUZZ_SECONDS ?= 300
fuzz: setup
	$(BIN)/python benchmarks/fuzz_update.py --seconds $(FUZZ_SECONDS)

clean:
	rm -rf build $(OUT)
