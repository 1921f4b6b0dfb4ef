package org.mobdistill.harness

import android.app.Activity
import android.app.Instrumentation
import android.content.Context
import android.os.Bundle
import android.util.Log
import java.io.File
import kotlin.concurrent.thread
import org.mobdistill.MobdistillEngine

private const val TAG = "mobdistill"
const val RUNTIME_LIB = "liblitert-lm.so"

/** Runs one request in-process; same flags, JSONL and summary as the mobdistill-engine binary. */
fun runBenchmark(context: Context, extras: Bundle?): Pair<Int, BenchmarkRequest> {
    val map = extras?.keySet()?.associateWith { extras.get(it).toString() } ?: emptyMap()
    val runtime = File(context.applicationInfo.nativeLibraryDir, RUNTIME_LIB).path
    val request = BenchmarkRequest.fromExtras(map, context.filesDir.path, runtime)
    Log.i(TAG, "benchmark ${request.engineArgs().joinToString(" ")}")
    val code = try {
        MobdistillEngine.benchmark(request.engineArgs())
    } catch (err: RuntimeException) {
        Log.e(TAG, "benchmark failed: ${err.message}")
        File(request.summary + ".error").writeText(err.message ?: err.toString())
        1
    }
    Log.i(TAG, "benchmark exit $code; summary ${request.summary}")
    return code to request
}

/** `am start -W -n org.mobdistill.harness/.BenchmarkActivity -e model mobilevos -e frames 100` */
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
 * `am instrument -w -e model mobilevos -e delegate gpu org.mobdistill.harness/.BenchmarkInstrumentation`
 * blocks until the run ends and prints `INSTRUMENTATION_RESULT: summary=...` lines for the host.
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
        val (code, request) = runBenchmark(targetContext, arguments)
        val result = Bundle().apply {
            putInt("exit_code", code)
            putString("jsonl", request.jsonl)
            putString("summary", request.summary)
        }
        finish(if (code == 0) Activity.RESULT_OK else Activity.RESULT_CANCELED, result)
    }
}
