package org.mobdistill.harness

/**
 * A benchmark request from `am instrument -e` / `am start --es` extras, turned into
 * `mobdistill-engine` flags so the app writes the same JSONL and summary as the executable.
 * Pure JVM (host-tested by hostcheck/BenchmarkRequestCheck.kt).
 *
 * Extras are the engine's own flags, as they are: `-e num_runs 100` becomes `--num_runs=100`
 * (one home for engine options: the engine's flag table; the host tooling builds them with
 * runtime/engine.py EngineOptions.to_flags()). The engine rejects a flag it does not know.
 * Besides those, three app extras:
 * - `tag` (default "run"): outputs `files/<tag>.jsonl` and `files/<tag>.summary.json`; the app
 *   owns `jsonl` and `summary` (and `runtime_lib`, its packaged library), so they are refused.
 * - `model` (default "mobilevos") and `queue`: without `manifest`, load
 *   `files/models/<model>.manifest.json`, or `files/models/<model>_q<queue>.manifest.json`.
 * Without `frames` (a raw RGB file) the app feeds `--random_input=true`.
 */
data class BenchmarkRequest(val engineArgs: List<String>, val jsonl: String, val summary: String) {
    companion object {
        private val APP_EXTRAS = setOf("tag", "model", "queue")
        private val APP_OWNED = setOf("jsonl", "summary", "runtime_lib")
        private val FLAG_NAME = Regex("[a-z][a-z0-9_]*")
        private val TAG = Regex("[A-Za-z0-9][A-Za-z0-9._-]*")
        // The harness's extras before it took engine flags: say which flag replaced each.
        private val RENAMED = mapOf(
            "threads" to "num_threads", "warmup" to "warmup_runs", "frames_file" to "frames",
            "delegate" to "use_xnnpack, use_gpu or use_nnapi (true|false)",
        )

        /** A tag names files in `files/`: no separators, no leading dot. */
        fun isPlainTag(tag: String): Boolean = TAG.matches(tag)

        fun fromExtras(extras: Map<String, String>, filesDir: String, runtimeLib: String): BenchmarkRequest {
            for ((name, value) in extras) {
                require(FLAG_NAME.matches(name)) { "extra '$name' is not an engine flag name ([a-z][a-z0-9_]*)" }
                require(name !in APP_OWNED) { "extra '$name' is set by the app (outputs come from 'tag')" }
                RENAMED[name]?.let { throw IllegalArgumentException("extra '$name' is now the engine flag $it") }
                require(!(name == "frames" && value.isNotEmpty() && value.all(Char::isDigit))) {
                    "extra 'frames' is the engine's raw RGB frames file; the number of timed runs is 'num_runs'"
                }
            }
            val tag = extras["tag"] ?: "run"
            require(isPlainTag(tag)) { "extra 'tag' must be a plain file name, not '$tag'" }
            val queue = extras["queue"]?.let {
                it.toIntOrNull() ?: throw IllegalArgumentException("extra 'queue' must be an integer, not '$it'")
            }
            val model = extras["model"] ?: "mobilevos"
            val suffix = if (queue != null) "_q$queue" else ""
            val jsonl = "$filesDir/$tag.jsonl"
            val summary = "$filesDir/$tag.summary.json"
            val args = buildList {
                if ("manifest" !in extras) add("--manifest=$filesDir/models/$model$suffix.manifest.json")
                add("--runtime_lib=$runtimeLib")
                for ((name, value) in extras.toSortedMap()) if (name !in APP_EXTRAS) add("--$name=$value")
                if ("frames" !in extras && "random_input" !in extras) add("--random_input=true")
                add("--jsonl=$jsonl")
                add("--summary=$summary")
            }
            return BenchmarkRequest(args, jsonl, summary)
        }
    }
}
