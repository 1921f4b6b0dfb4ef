// Versions are declared once, here, and used by both modules.
plugins {
    id("com.android.application") version "8.7.3" apply false
    id("com.android.library") version "8.7.3" apply false
    id("org.jetbrains.kotlin.android") version "2.0.21" apply false
}

extra["compileSdk"] = 35
extra["minSdk"] = 26          // Android 8: NNAPI 1.1, toybox `timeout`/`sha256sum` for adb runs
extra["ndkVersion"] = "27.2.12479018"
extra["cmakeVersion"] = "3.22.1"
extra["abis"] = listOf("arm64-v8a", "x86_64")
extra["camerax"] = "1.4.1"
