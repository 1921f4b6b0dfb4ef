package org.mobdistill.harness

import android.app.Activity
import android.app.Instrumentation
import android.content.Context
import android.os.Bundle
import android.util.Log
import java.io.File
import kotlin.concurrent.thread
import org.mobdistill.MobdistillEngine
import org.mobdistill.android.BitmapJpegEncoder

private const val TAG = "mobdistill"
const val RUNTIME_LIB = "liblitert-lm.so"

/** What one run ended with: the engine's exit code, its outputs, and the error if any. */
data class BenchmarkOutcome(val code: Int, val jsonl: String, val summary: String, val error: String?)

/**
 * Runs one request in-process; same flags, JSONL and summary as the mobdistill-engine binary.
 * With `ams_server` it runs the live mode instead ([LiveRequest], [runLive]). A failure (bad
 * extras, engine error) is written to `<summary>.error`, so a host polling after `am start`
 * sees the end of the run either way.
 */
fun runBenchmark(context: Context, extras: Bundle?): BenchmarkOutcome {
    val map = extras?.keySet()?.associateWith { extras.get(it).toString() } ?: emptyMap()
    val runtime = File(context.applicationInfo.nativeLibraryDir, RUNTIME_LIB).path
    if (LiveRequest.isLive(map)) return runLiveMode(context, map, runtime)
    val tag = map["tag"] ?: "run"
    val fallbackSummary = "${context.filesDir.path}/$tag.summary.json"
    return try {
        val request = BenchmarkRequest.fromExtras(map, context.filesDir.path, runtime)
        Log.i(TAG, "benchmark ${request.engineArgs.joinToString(" ")}")
        val code = MobdistillEngine.benchmark(request.engineArgs)
        Log.i(TAG, "benchmark exit $code; summary ${request.summary}")
        val error = if (code == 0) null else "engine exit code $code"
        error?.let { File("${request.summary}.error").writeText(it) }
        BenchmarkOutcome(code, request.jsonl, request.summary, error)
    } catch (err: RuntimeException) {
        val message = err.message ?: err.toString()
        Log.e(TAG, "benchmark failed: $message")
        if (BenchmarkRequest.isPlainTag(tag)) File("$fallbackSummary.error").writeText(message)
        BenchmarkOutcome(1, "", fallbackSummary, message)
    }
}

/** The live mode: AmsClient on the request's frames; its status file is the run's summary. */
private fun runLiveMode(context: Context, map: Map<String, String>, runtime: String): BenchmarkOutcome {
    val tag = map["tag"] ?: "live"
    val fallbackSummary = "${context.filesDir.path}/$tag.live.json"
    return try {
        val request = LiveRequest.fromExtras(map, context.filesDir.path, runtime)
        Log.i(TAG, "live ${request.describe().joinToString(" ")}")
        runLive(request, BitmapJpegEncoder())
        BenchmarkOutcome(0, request.jsonl, request.summary, null)
    } catch (err: Exception) { // bad extras, the engine, the frames file (IOException)
        val message = err.message ?: err.toString()
        Log.e(TAG, "live run failed: $message")
        if (BenchmarkRequest.isPlainTag(tag)) File("$fallbackSummary.error").writeText(message)
        BenchmarkOutcome(1, "", fallbackSummary, message)
    }
}

/** `am start -W -n org.mobdistill.harness/.BenchmarkActivity --es model mobilevos --es num_runs 100` */
class BenchmarkActivity : Activity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val extras = intent.extras
        thread(name = "mobdistill-benchmark") {
            runBenchmark(applicationContext, extras)
            runOnUiThread { finish() }
        }
    }
}

/**
 * `am instrument -w -e model mobilevos -e use_gpu true org.mobdistill.harness/.BenchmarkInstrumentation`
 * blocks until the run ends and prints `INSTRUMENTATION_RESULT: exit_code=...`, `summary=...`
 * (and `error=...`) lines for the host; INSTRUMENTATION_CODE -1 is success, 0 a failed run.
 */
class BenchmarkInstrumentation : Instrumentation() {
    private var arguments: Bundle? = null

    override fun onCreate(arguments: Bundle?) {
        super.onCreate(arguments)
        this.arguments = arguments
        start()
    }

    override fun onStart() {
        super.onStart()
        val outcome = runBenchmark(targetContext, arguments)
        val result = Bundle().apply {
            putInt("exit_code", outcome.code)
            putString("jsonl", outcome.jsonl)
            putString("summary", outcome.summary)
            outcome.error?.let { putString("error", it) }
        }
        finish(if (outcome.code == 0) Activity.RESULT_OK else Activity.RESULT_CANCELED, result)
    }
}
