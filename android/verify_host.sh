#!/usr/bin/env bash
# What can be checked of the Android side without the SDK/NDK (see docs/android.md):
#  1. the JNI bridge builds with the library's own CMakeLists against the JDK's jni.h, linked
#     with a stub of engine_facade.h (-Wall -Wextra -Werror, no undefined symbols);
#  2. kotlinc (npm kotlin-compiler, cached in .cache/npm) compiles the Kotlin that needs no
#     android.jar: the library API (MobdistillEngine) and the harness's BenchmarkRequest;
#  3. a desktop JVM runs HostCheck: Kotlin -> JNI -> stub and back, errors as exceptions.
# Usage: android/verify_host.sh [BUILD_DIR]   (default build/android-host). Needs cmake, g++,
# a JDK 17 (JAVA_HOME or /usr/lib/jvm/java-17-openjdk-*) and npm (first run installs kotlinc).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-$ROOT/build/android-host}"
KOTLIN_VERSION=2.4.20
NPM_CACHE="$ROOT/.cache/npm"
export JAVA_HOME="${JAVA_HOME:-$(ls -d /usr/lib/jvm/java-17-openjdk-* 2>/dev/null | head -n1)}"
[ -f "$JAVA_HOME/include/jni.h" ] || { echo "no jni.h under JAVA_HOME=$JAVA_HOME: install a JDK 17" >&2; exit 2; }

echo "== 1. JNI bridge (CMake, host, facade stub)"
cmake -S "$ROOT/android/library/src/main/cpp" -B "$BUILD/jni" -DCMAKE_BUILD_TYPE=Release \
  -DJAVA_HOME="$JAVA_HOME" \
  -DMOBDISTILL_FACADE_STUB="$ROOT/android/library/src/test/cpp/engine_facade_stub.cc" >/dev/null
cmake --build "$BUILD/jni" -j 2
nm -D --defined-only "$BUILD/jni/libmobdistill_jni.so" | grep -c ' Java_org_mobdistill_' \
  | xargs -I{} echo "exports {} JNI functions"

echo "== 2. kotlinc $KOTLIN_VERSION"
KOTLINC="$NPM_CACHE/node_modules/kotlin-compiler/bin/kotlinc"
if [ ! -x "$KOTLINC" ]; then
  npm install --silent --no-audit --no-fund --prefix "$NPM_CACHE" "kotlin-compiler@$KOTLIN_VERSION"
fi
mkdir -p "$BUILD/kotlin"
JAVA_HOME="$JAVA_HOME" "$KOTLINC" -jvm-target 17 -include-runtime -nowarn \
  -d "$BUILD/kotlin/hostcheck.jar" \
  "$ROOT/android/library/src/main/kotlin/org/mobdistill/MobdistillEngine.kt" \
  "$ROOT/android/harness/src/main/kotlin/org/mobdistill/harness/BenchmarkRequest.kt" \
  "$ROOT/android/library/src/test/kotlin/HostCheck.kt"

echo "== 3. JVM -> JNI -> stub"
MANIFEST="$BUILD/kotlin/tiny.manifest.json"
echo '{"schema": "mobdistill.manifest", "schema_version": 1}' > "$MANIFEST"
"$JAVA_HOME/bin/java" -Djava.library.path="$BUILD/jni" -cp "$BUILD/kotlin/hostcheck.jar" \
  HostCheckKt "$MANIFEST"
