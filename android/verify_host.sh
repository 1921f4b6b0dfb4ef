#!/usr/bin/env bash
# What can be checked of the Android side without the SDK/NDK (see docs/android.md):
#  1. the JNI bridge builds with the library's own CMakeLists against the JDK's jni.h, linked
#     with the REAL engine core (mobdistill_engine_core + mobdistill_update, -fPIC, no undefined
#     symbols; -Wall -Wextra -Werror for the bridge);
#  2. ONE kotlinc call (npm kotlin-compiler, cached in .cache/npm) compiles every file that needs
#     no android.jar into BUILD/kotlin/hostcheck.jar: the library (all of
#     android/library/src/main/kotlin except its org/mobdistill/android/ folder, which holds the
#     Android-framework-only code), the harness files in HARNESS_JVM_SOURCES, and the JVM checks
#     in android/library/src/main/cpp/hostcheck/ (each file has its own main: FooCheckKt);
#  3. a tiny real DeepLab export (mobdistill.export, cached in BUILD/model) plus update packets
#     and reference masks from ai_edge_litert (Python, .venv);
#  4. a desktop JVM runs RealCoreCheck: Kotlin -> JNI -> engine core -> TFLite C API
#     (liblitert-lm.so): load the manifest, segment frames, apply update packets, read stats,
#     run the in-process benchmark.
# Usage: android/verify_host.sh [BUILD_DIR]   (default build/android-host). Needs cmake, g++,
# zlib and nlohmann-json headers, a JDK 17 (JAVA_HOME or /usr/lib/jvm/java-17-openjdk-*), the
# project venv (.venv) and npm (first run installs kotlinc).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-$ROOT/build/android-host}"
KOTLIN_VERSION=2.4.20
NPM_CACHE="$ROOT/.cache/npm"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
export JAVA_HOME="${JAVA_HOME:-$(ls -d /usr/lib/jvm/java-17-openjdk-* 2>/dev/null | head -n1)}"
[ -f "$JAVA_HOME/include/jni.h" ] || { echo "no jni.h under JAVA_HOME=$JAVA_HOME: install a JDK 17" >&2; exit 2; }

echo "== 1. JNI bridge + real engine core (CMake, host)"
cmake -S "$ROOT/android/library/src/main/cpp" -B "$BUILD/jni" -DCMAKE_BUILD_TYPE=Release \
  -DJAVA_HOME="$JAVA_HOME" -DMOBDISTILL_FACADE_STUB= -DMOBDISTILL_BUILD_TESTS=OFF \
  -DMOBDISTILL_WERROR=ON >/dev/null
cmake --build "$BUILD/jni" -j 2
nm -D --defined-only "$BUILD/jni/libmobdistill_jni.so" | grep -c ' Java_org_mobdistill_' \
  | xargs -I{} echo "exports {} JNI functions"
nm -D --defined-only "$BUILD/jni/libmobdistill_jni.so" | grep -q ' md_engine_' \
  && { echo "md_engine_* leaked out of the JNI library" >&2; exit 1; } || true

echo "== 2. kotlinc $KOTLIN_VERSION"
KOTLINC="$NPM_CACHE/node_modules/kotlin-compiler/bin/kotlinc"
if [ ! -x "$KOTLINC" ]; then
  npm install --silent --no-audit --no-fund --prefix "$NPM_CACHE" "kotlin-compiler@$KOTLIN_VERSION"
fi
# The harness's files that use no Android framework class.
HARNESS_JVM_SOURCES=(
  "$ROOT/android/harness/src/main/kotlin/org/mobdistill/harness/BenchmarkRequest.kt"
  "$ROOT/android/harness/src/main/kotlin/org/mobdistill/harness/LiveRequest.kt"
  "$ROOT/android/harness/src/main/kotlin/org/mobdistill/harness/LiveRun.kt"
)
mapfile -t LIBRARY_JVM_SOURCES < <(find "$ROOT/android/library/src/main/kotlin" -name '*.kt' \
  -not -path '*/org/mobdistill/android/*' | sort)
mkdir -p "$BUILD/kotlin"
JAVA_HOME="$JAVA_HOME" "$KOTLINC" -jvm-target 17 -include-runtime -nowarn \
  -d "$BUILD/kotlin/hostcheck.jar" \
  "${LIBRARY_JVM_SOURCES[@]}" "${HARNESS_JVM_SOURCES[@]}" \
  "$ROOT"/android/library/src/main/cpp/hostcheck/*.kt

echo "== 3. tiny real model, packets and reference masks"
# A tiny DeepLab export already in BUILD/check/model (the tests put their session's one there)
# is used as it is; otherwise one is made.
WORK="$BUILD/check"
mkdir -p "$WORK"
RUNTIME_LIB="$("$PYTHON" - "$WORK" <<'PY'
import hashlib, json, sys
from pathlib import Path
import numpy as np
from mobdistill.runtime.engine import runtime_library
work = Path(sys.argv[1])
manifest = work / "model" / "deeplab.manifest.json"
if not manifest.is_file():
    from mobdistill.export.api import export_model
    export_model("deeplab", out_dir=work / "model", formats=("tflite",), tiny=True)
from ai_edge_litert.interpreter import Interpreter
from mobdistill.contract import wire
m = json.loads(manifest.read_text())
base = (manifest.parent / m["artifacts"][0]["file"]).read_bytes()
sha = hashlib.sha256(base).digest()
KEY, DEVICE = b"verify-host-key", bytes(range(16))  # the check passes them to the facade
h, w = m["model"]["resolution"]
entry = next(e for e in m["parameter_map"]["entries"] if e["parameter"] == "classifier.bias")
n = entry["buffer_size"] // 4
patch = wire.TensorPatch(entry["tensor_index"], n, np.array([n - 1]), np.array([5.0]))
good = wire.encode_update([patch], base_sha256=sha, sequence=1, value_coding=wire.ValueCoding.F32,
                          device_id=DEVICE, hmac_key=KEY)
(work / "good.mdup").write_bytes(good)
(work / "update.key").write_bytes(KEY)  # RealCoreCheck gives key and id to the engine
(work / "device_id.hex").write_text(DEVICE.hex())
(work / "bad.mdup").write_bytes(good[:90] + bytes([good[90] ^ 0x10]) + good[91:])  # payload: bad_checksum
table = {e["tensor_index"]: wire.TensorLocation(e["buffer_offset"], e["buffer_size"], e["dtype"])
         for e in m["parameter_map"]["entries"]}
patched = wire.apply_update(base, table, wire.decode_update(good, expected_base_sha256=sha,
                                                            expected_device_id=DEVICE, hmac_key=KEY))
frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
frame.tofile(work / "frame.rgb")
for name, data in (("base", base), ("patched", patched)):
    run = Interpreter(model_content=data).get_signature_runner("serving_default")
    logits = run(frame=frame[None].astype(np.float32))["logits"][0]
    logits.argmax(-1).astype(np.uint8).tofile(work / f"mask_{name}.u8")
print(runtime_library())
PY
)"
RUNTIME_LIB="$(echo "$RUNTIME_LIB" | tail -n1)"
echo "runtime library: $RUNTIME_LIB"

echo "runtime library path in $BUILD/runtime_library.txt"
echo "$RUNTIME_LIB" > "$BUILD/runtime_library.txt"

echo "== 4. JVM -> JNI -> real engine core"
"$JAVA_HOME/bin/java" -Djava.library.path="$BUILD/jni" -cp "$BUILD/kotlin/hostcheck.jar" \
  RealCoreCheckKt "$WORK" "$WORK/model/deeplab.manifest.json" "$RUNTIME_LIB"
