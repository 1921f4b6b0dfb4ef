// Run by android/verify_host.sh on a desktop JVM: Kotlin API -> JNI bridge -> the REAL engine
// core (libmobdistill_jni.so linked with mobdistill_engine_core) -> TFLite C API, with a tiny
// real export. Lives beside the JNI sources (not a Gradle source set) because it is a host
// check only. Args: work dir (frame.rgb, mask_*.u8, *.mdup, update.key, device_id.hex), manifest
// path, runtime library.
import java.io.File
import java.nio.ByteBuffer
import java.util.concurrent.CountDownLatch
import java.util.concurrent.atomic.AtomicInteger
import kotlin.concurrent.thread
import org.mobdistill.Delegate
import org.mobdistill.MobdistillEngine
import org.mobdistill.MobdistillException

fun check(ok: Boolean, what: String) {
    if (!ok) throw AssertionError(what)
    println("ok   $what")
}

fun agreement(mask: ByteBuffer, want: ByteArray): Double {
    var same = 0
    for (i in want.indices) if (mask.get(i) == want[i]) same++
    return same.toDouble() / want.size
}

// close() while segment/applyUpdate/stats run on other threads: close waits for the calls in
// progress, every later call throws "closed", nothing touches freed native memory (a crash here
// would take the JVM down).
fun closeRace(manifest: String, runtime: String, key: ByteArray, deviceId: ByteArray,
              packet: ByteArray, frame: ByteArray) {
    val engine = MobdistillEngine.open(manifest, runtime, updateKey = key, deviceId = deviceId)
    val h = engine.info.height
    val w = engine.info.width
    val calls = AtomicInteger()
    val closedSeen = AtomicInteger()
    val running = CountDownLatch(3)
    fun worker(call: () -> Unit) = thread {
        running.countDown()
        try {
            while (true) {
                call()
                calls.incrementAndGet()
            }
        } catch (err: MobdistillException) {
            if (err.message!!.contains("closed")) closedSeen.incrementAndGet() else throw err
        }
    }
    val rgb = ByteBuffer.allocateDirect(h * w * 3).put(frame, 0, h * w * 3)
    val mask = ByteBuffer.allocateDirect(h * w)
    val threads = listOf(worker { engine.segment(rgb, w * 3, mask) },
                         worker { engine.applyUpdate(packet) },
                         worker { engine.stats() })
    running.await()
    Thread.sleep(300)
    engine.close()
    threads.forEach { it.join(10_000) }
    check(threads.none { it.isAlive } && closedSeen.get() == 3 && calls.get() > 3,
          "close() during segment/applyUpdate/stats on 3 threads: ${calls.get()} calls, then " +
          "each thread saw 'closed'")
}

fun main(args: Array<String>) {
    val dir = File(args[0])
    val manifest = File(args[1]).path
    val runtime = args[2]
    try {
        MobdistillEngine.open("/nonexistent/model.manifest.json", runtime)
        check(false, "a missing manifest throws")
    } catch (err: MobdistillException) {
        check(err.message!!.contains("mobdistill export"), "a missing manifest throws with the fix")
    }
    val key = File(dir, "update.key").readBytes()
    val deviceId = File(dir, "device_id.hex").readText().trim().chunked(2)
        .map { it.toInt(16).toByte() }.toByteArray()
    val state = File(dir, "updates.state").apply { delete() }
    MobdistillEngine.open(manifest, runtime, Delegate.XNNPACK, numThreads = 1, updateKey = key,
                          deviceId = deviceId, stateFile = state.path).use { engine ->
        val info = engine.info
        val h = info.height
        val w = info.width
        check(h == 64 && w == 128 && info.numClasses == 3 && info.queueLength == 0,
              "info comes from the real manifest (${h}x$w, ${info.numClasses} classes)")
        check(engine.delegateUsed == "xnnpack", "the real delegate is reported (${engine.delegateUsed})")
        val frame = File(dir, "frame.rgb").readBytes()
        // rows padded to a stride of w*3+16, as camera buffers often are
        val stride = w * 3 + 16
        val rgb = ByteBuffer.allocateDirect(h * stride)
        for (y in 0 until h) for (x in 0 until w * 3) rgb.put(y * stride + x, frame[y * w * 3 + x])
        val mask = ByteBuffer.allocateDirect(h * w)
        val invokeUs = engine.segment(rgb, stride, mask)
        val base = agreement(mask, File(dir, "mask_base.u8").readBytes())
        check(invokeUs >= 0 && base > 0.999, "segment = ai_edge_litert argmax ($base, $invokeUs us)")

        val applied = engine.applyUpdate(File(dir, "good.mdup").readBytes())
        check("\"status\":\"applied\"" in applied && "\"sequence\":1" in applied,
              "applyUpdate applies a real packet: $applied")
        engine.segment(rgb, stride, mask)
        val patched = agreement(mask, File(dir, "mask_patched.u8").readBytes())
        check(patched > 0.999, "the next frame runs the patched model ($patched)")
        val rejected = engine.applyUpdate(File(dir, "bad.mdup").readBytes())
        check("\"status\":\"rejected\"" in rejected && "\"reason\":\"bad_checksum\"" in rejected,
              "a corrupt packet is rejected with its reason")
        val replay = engine.applyUpdate(File(dir, "good.mdup").readBytes())
        check("\"reason\":\"replay\"" in replay, "a replayed packet is rejected")
        engine.segment(rgb, stride, mask)
        check(agreement(mask, File(dir, "mask_patched.u8").readBytes()) > 0.999,
              "rejected packets leave the model untouched")
        val stats = engine.stats()
        check("\"frames\":3" in stats && "\"model_version\":1" in stats &&
              "\"applied\":1" in stats && "\"rejected\":2" in stats, "stats: $stats")
        try {
            engine.segment(rgb, 3, mask)
            check(false, "a short row stride throws")
        } catch (err: MobdistillException) {
            check(err.message!!.contains("resize the frame"), "a short row stride throws with the fix")
        }
        engine.close()
        try {
            engine.stats()
            check(false, "a closed engine throws")
        } catch (err: MobdistillException) {
            check(true, "a closed engine throws")
        }
    }
    check(state.readText().contains("\"last_sequence\":1"), "the applied sequence is persisted")
    MobdistillEngine.open(manifest, runtime, updateKey = key, deviceId = deviceId,
                          stateFile = state.path).use { restarted ->
        check("\"reason\":\"replay\"" in restarted.applyUpdate(File(dir, "good.mdup").readBytes()),
              "after a restart on the state file the old packet is a replay")
    }
    MobdistillEngine.open(manifest, runtime).use { keyless ->
        check("\"reason\":\"bad_hmac\"" in keyless.applyUpdate(File(dir, "good.mdup").readBytes()),
              "without a key (and without insecureUpdates) packets are refused")
    }
    closeRace(manifest, runtime, key, deviceId, File(dir, "good.mdup").readBytes(),
              File(dir, "frame.rgb").readBytes())
    val out = File(dir, "bench")
    out.mkdirs()
    val argv = listOf("--manifest=$manifest", "--runtime_lib=$runtime", "--num_runs=5",
                      "--jsonl=${out.path}/run.jsonl", "--summary=${out.path}/run.summary.json")
    check(MobdistillEngine.benchmark(argv) == 0, "benchmark runs the real Runner through JNI")
    val summary = File(out, "run.summary.json").readText()
    check("\"delegate_used\": \"xnnpack\"" in summary && File(out, "run.jsonl").readLines().size == 6,
          "benchmark writes the same JSONL and summary as mobdistill-engine")
    try {
        MobdistillEngine.benchmark(listOf("--num_thread=2"))
        check(false, "a bad benchmark flag throws")
    } catch (err: MobdistillException) {
        check(err.message!!.contains("--num_thread"), "a bad benchmark flag throws naming it")
    }
    println("host check passed")
}
