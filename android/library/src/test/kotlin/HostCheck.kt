// Run by android/verify_host.sh on a desktop JVM: the Kotlin API -> JNI bridge -> facade stub.
import java.io.File
import java.nio.ByteBuffer
import org.mobdistill.Delegate
import org.mobdistill.MobdistillEngine
import org.mobdistill.MobdistillException
import org.mobdistill.harness.BenchmarkRequest

fun check(ok: Boolean, what: String) {
    if (!ok) throw AssertionError(what)
    println("ok   $what")
}

fun main(args: Array<String>) {
    val manifest = File(args[0])
    try {
        MobdistillEngine.open("/nonexistent/model.manifest.json", "libnone.so")
        check(false, "a missing manifest throws")
    } catch (err: MobdistillException) {
        check(err.message!!.contains("mobdistill export"), "a missing manifest throws with the fix")
    }
    MobdistillEngine.open(manifest.path, "libruntime.so", Delegate.GPU, numThreads = 2).use { engine ->
        check(engine.info.height == 4 && engine.info.width == 6, "info comes through JNI")
        check(engine.delegateUsed == "gpu", "delegateUsed comes through JNI")
        val rgb = ByteBuffer.allocateDirect(4 * 6 * 3)
        for (i in 0 until 4 * 6) rgb.put(3 * i, if (i % 2 == 0) 200.toByte() else 10)
        val mask = ByteBuffer.allocateDirect(4 * 6)
        check(engine.segment(rgb, 6 * 3, mask) == 1L, "segment returns the invoke time")
        check(mask.get(0) == 1.toByte() && mask.get(1) == 0.toByte(), "segment fills the mask")
        try {
            engine.segment(rgb, 6 * 3, ByteBuffer.allocateDirect(3))
            check(false, "a small mask throws")
        } catch (err: MobdistillException) {
            check(err.message!!.contains("resize the frame"), "a small mask throws with the fix")
        }
        engine.close()
        try {
            engine.reset()
            check(false, "a closed engine throws")
        } catch (err: MobdistillException) {
            check(true, "a closed engine throws")
        }
    }
    val request = BenchmarkRequest.fromExtras(
        mapOf("model" to "mobilevos", "frames" to "30", "threads" to "4", "delegate" to "nnapi",
              "queue" to "3"),
        filesDir = "/data/user/0/org.mobdistill.harness/files",
        runtimeLib = "/data/app/lib/libtensorflowlite_c.so",
    )
    val argv = request.engineArgs()
    check("--manifest=/data/user/0/org.mobdistill.harness/files/models/mobilevos_q3.manifest.json" in argv,
          "harness extras map to the manifest of that queue length")
    check("--num_runs=30" in argv && "--num_threads=4" in argv && "--use_nnapi=true" in argv,
          "harness extras map to engine flags")
    check(MobdistillEngine.benchmark(argv) == 0, "benchmark runs through JNI")
    println("host check passed")
}
