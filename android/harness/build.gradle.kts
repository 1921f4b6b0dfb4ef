// org.mobdistill.harness — CameraX preview with the mask overlay, and the benchmark entry points
// (BenchmarkActivity for `am start`, BenchmarkInstrumentation for `am instrument`).
// The TFLite runtime (liblitert-lm.so from the litert-lm-api wheel's android_23_arm64_v8a build)
// goes in src/main/jniLibs/<abi>/, copied there by `make android-runtime` (docs/android.md).
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

@Suppress("UNCHECKED_CAST")
val abis = rootProject.extra["abis"] as List<String>
val camerax = rootProject.extra["camerax"] as String

android {
    namespace = "org.mobdistill.harness"
    compileSdk = rootProject.extra["compileSdk"] as Int

    defaultConfig {
        applicationId = "org.mobdistill.harness"
        minSdk = rootProject.extra["minSdk"] as Int
        targetSdk = rootProject.extra["compileSdk"] as Int
        versionCode = 1
        versionName = "0.1.0"
        ndk { abiFilters += abis }
    }
    buildTypes {
        // debuggable so `adb shell run-as org.mobdistill.harness` can read files/ for results
        getByName("debug") { isDebuggable = true }
    }
    packaging { jniLibs.useLegacyPackaging = true }  // real .so files: runtime_lib is a path
    sourceSets["main"].java.srcDirs("src/main/kotlin")
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
}

dependencies {
    implementation(project(":library"))
    implementation("androidx.appcompat:appcompat:1.7.0")
    implementation("androidx.camera:camera-camera2:$camerax")
    implementation("androidx.camera:camera-lifecycle:$camerax")
    implementation("androidx.camera:camera-view:$camerax")
}
