// org.mobdistill:library — the Kotlin API (MobdistillEngine) and libmobdistill_jni.so, which
// CMake builds from src/main/cpp together with the engine core (../engine, add_subdirectory).
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

@Suppress("UNCHECKED_CAST")
val abis = rootProject.extra["abis"] as List<String>

android {
    namespace = "org.mobdistill"
    compileSdk = rootProject.extra["compileSdk"] as Int
    ndkVersion = rootProject.extra["ndkVersion"] as String

    defaultConfig {
        minSdk = rootProject.extra["minSdk"] as Int
        ndk { abiFilters += abis }
        externalNativeBuild {
            cmake {
                arguments += listOf("-DANDROID_STL=c++_static", "-DANDROID_SUPPORT_FLEXIBLE_PAGE_SIZES=ON")
                cppFlags += "-std=c++17"
            }
        }
        consumerProguardFiles("consumer-rules.pro")
    }
    externalNativeBuild {
        cmake {
            path = file("src/main/cpp/CMakeLists.txt")
            version = rootProject.extra["cmakeVersion"] as String
        }
    }
    sourceSets["main"].java.srcDirs("src/main/kotlin")
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
}
