# Two commands set everything up on a fresh machine:
#   make demo   - export MobileVOS (TFLite + ONNX, verified) and profile it with the engine on the host
#   make test   - the test suite
# Both create what they need: Debian packages, the virtual environment, the host engine build.

SHELL  := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEBS   := cmake ninja-build g++ make nlohmann-json3-dev zlib1g-dev adb openjdk-17-jdk-headless curl unzip clang
KOTLINC := .cache/npm/node_modules/kotlin-compiler/bin/kotlinc
OUT    ?= out

.PHONY: demo test setup system-deps engine clean

demo: setup engine
	$(BIN)/mobdistill export --model mobilevos --out $(OUT)/mobilevos
	$(BIN)/mobdistill profile --artifact $(OUT)/mobilevos/mobilevos.manifest.json --out $(OUT)/profile

test: setup engine $(KOTLINC)
	$(BIN)/python -m pytest -q -m "not slow and not phone"

setup: system-deps $(VENV)/.installed

# Debian packages the engine build and the ADB tests need (skipped when already present).
system-deps:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
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

clean:
	rm -rf build $(OUT)
