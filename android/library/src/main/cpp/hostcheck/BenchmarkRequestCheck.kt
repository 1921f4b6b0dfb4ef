// JVM check of the harness's extras parsing (android/harness/.../BenchmarkRequest.kt and, with
// MODE `live`, LiveRequest.kt), driven by tests/adb/test_app_runner.py: args are MODE
// (`benchmark` or `live`) FILES_DIR RUNTIME_LIB, then cases, each `//` followed by KEY=VALUE
// extras. Prints, per case, the engine args (benchmark) or LiveRequest.describe() (live) one per
// line, or `error: MESSAGE`, then a blank line.
import org.mobdistill.harness.BenchmarkRequest
import org.mobdistill.harness.LiveRequest

fun main(args: Array<String>) {
    require(args.size >= 3 && args[0] in setOf("benchmark", "live")) {
        "usage: BenchmarkRequestCheckKt benchmark|live FILES_DIR RUNTIME_LIB (// K=V...)..."
    }
    val (mode, filesDir, runtimeLib) = args
    val cases = mutableListOf<MutableMap<String, String>>()
    for (arg in args.drop(3)) {
        if (arg == "//") {
            cases.add(linkedMapOf())
        } else {
            val (key, value) = arg.split("=", limit = 2)
            cases.last()[key] = value
        }
    }
    for (extras in cases) {
        try {
            val lines = if (mode == "live") {
                LiveRequest.fromExtras(extras, filesDir, runtimeLib).describe()
            } else {
                BenchmarkRequest.fromExtras(extras, filesDir, runtimeLib).engineArgs
            }
            lines.forEach(::println)
        } catch (err: IllegalArgumentException) {
            println("error: ${err.message}")
        }
        println()
    }
}
