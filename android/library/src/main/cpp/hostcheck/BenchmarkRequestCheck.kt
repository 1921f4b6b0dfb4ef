// JVM check of the harness's extras parsing (android/harness/.../BenchmarkRequest.kt), driven by
// tests/adb/test_app_runner.py: args are FILES_DIR RUNTIME_LIB, then cases, each `//` followed by
// KEY=VALUE extras. Prints, per case, the engine args one per line (or `error: MESSAGE`), then a
// blank line.
import org.mobdistill.harness.BenchmarkRequest

fun main(args: Array<String>) {
    require(args.size >= 2) { "usage: BenchmarkRequestCheckKt FILES_DIR RUNTIME_LIB (// K=V...)..." }
    val cases = mutableListOf<MutableMap<String, String>>()
    for (arg in args.drop(2)) {
        if (arg == "//") {
            cases.add(linkedMapOf())
        } else {
            val (key, value) = arg.split("=", limit = 2)
            cases.last()[key] = value
        }
    }
    for (extras in cases) {
        try {
            BenchmarkRequest.fromExtras(extras, args[0], args[1]).engineArgs.forEach(::println)
        } catch (err: IllegalArgumentException) {
            println("error: ${err.message}")
        }
        println()
    }
}
