// The Android side of mobdistill: `library` (Kotlin API + JNI bridge over the C++ engine) and
// `harness` (CameraX demo + benchmark app). Build with Android Studio or `./gradlew`, which
// needs Google's Maven and the NDK; neither is reachable on the project's CI (docs/android.md).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}
rootProject.name = "mobdistill-android"
include(":library", ":harness")
