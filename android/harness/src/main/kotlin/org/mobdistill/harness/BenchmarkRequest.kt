package org.mobdistill.harness

import org.mobdistill.Delegate

/**
 * A benchmark request from `am start` / `am instrument` extras, turned into `mobdistill-engine`
 * flags so the app writes the same JSONL and summary as the executable. Pure JVM (host-tested).
 *
 * Extras (all strings; `am start --es`, `am instrument -e`):
 * - `model` (default "mobilevos"): loads `files/models/<model>.manifest.json`, or with `queue`
 *   set, `files/models/<model>_q<queue>.manifest.json` (queue length is an export-time shape).
 * - `manifest`: an explicit manifest path instead of `model`/`queue`.
 * - `frames` (50): timed runs; `warmup` (1): warmup runs; `threads` (1).
 * - `delegate` (xnnpack): cpu, xnnpack, gpu or nnapi; `delegate_lib`: GPU delegate library.
 * - `frames_file`: raw uint8 RGB frames (else deterministic random frames).
 * - `tag` (run): output names `files/<tag>.jsonl` and `files/<tag>.summary.json`.
 */
data class BenchmarkRequest(
    val manifest: String,
    val runtimeLib: String,
    val numRuns: Int,
    val warmupRuns: Int,
    val numThreads: Int,
    val delegate: Delegate,
    val delegateLib: String?,
    val framesFile: String?,
    val jsonl: String,
    val summary: String,
) {
    fun engineArgs(): List<String> = buildList {
        add("--manifest=$manifest")
        add("--runtime_lib=$runtimeLib")
        add("--num_runs=$numRuns")
        add("--warmup_runs=$warmupRuns")
        add("--num_threads=$numThreads")
        when (delegate) {
            Delegate.CPU -> add("--use_xnnpack=false")
            Delegate.XNNPACK -> add("--use_xnnpack=true")
            Delegate.GPU -> add("--use_gpu=true")
            Delegate.NNAPI -> add("--use_nnapi=true")
        }
        delegateLib?.let { add("--delegate_lib=$it") }
        if (framesFile != null) add("--frames=$framesFile") else add("--random_input=true")
        add("--jsonl=$jsonl")
        add("--summary=$summary")
    }

    companion object {
        fun fromExtras(extras: Map<String, String>, filesDir: String, runtimeLib: String): BenchmarkRequest {
            fun int(name: String, default: Int): Int = extras[name]?.let {
                it.toIntOrNull() ?: throw IllegalArgumentException("extra '$name' must be an integer, not '$it'")
            } ?: default
            val model = extras["model"] ?: "mobilevos"
            val queue = extras["queue"]?.let { int("queue", 0) }
            val suffix = if (queue != null) "_q$queue" else ""
            val tag = extras["tag"] ?: "run"
            return BenchmarkRequest(
                manifest = extras["manifest"] ?: "$filesDir/models/$model$suffix.manifest.json",
                runtimeLib = extras["runtime_lib"] ?: runtimeLib,
                numRuns = int("frames", 50),
                warmupRuns = int("warmup", 1),
                numThreads = int("threads", 1),
                delegate = Delegate.parse(extras["delegate"] ?: "xnnpack"),
                delegateLib = extras["delegate_lib"],
                framesFile = extras["frames_file"],
                jsonl = "$filesDir/$tag.jsonl",
                summary = "$filesDir/$tag.summary.json",
            )
        }
    }
}
