package org.mobdistill

import java.nio.ByteBuffer

/** An engine failure; the message says what to fix (it is the engine's Status text). */
class MobdistillException(message: String) : RuntimeException(message)

/** What a camera app needs to prepare frames: input size, classes, memory queue length. */
data class ModelInfo(val height: Int, val width: Int, val numClasses: Int, val queueLength: Int)

/** The accelerator to request; [MobdistillEngine.delegateUsed] says which one actually ran. */
enum class Delegate(val flag: String) {
    CPU("cpu"), XNNPACK("xnnpack"), GPU("gpu"), NNAPI("nnapi");

    companion object {
        fun parse(text: String): Delegate =
            entries.firstOrNull { it.flag == text.trim().lowercase() }
                ?: throw IllegalArgumentException(
                    "unknown delegate '$text': use one of ${entries.joinToString { it.flag }}")
    }
}

/**
 * A segmentation student loaded from a mobdistill manifest, for camera apps.
 *
 * Pure JVM (no android.* imports), so it also runs on a desktop JVM for host tests. Not thread
 * safe: call [segment] from one thread (CameraX's analyzer executor). Close it to free native
 * memory; a closed engine throws [MobdistillException].
 */
class MobdistillEngine private constructor(private var handle: Long) : AutoCloseable {

    /** Input size and classes, read once from the loaded manifest. */
    val info: ModelInfo = nativeInfo(handle).let { ModelInfo(it[0], it[1], it[2], it[3]) }

    /** The delegate that actually runs: a GPU request can silently fall back elsewhere. */
    val delegateUsed: String get() = nativeDelegateUsed(checkOpen())

    /** Starts a new video: the next frame runs `init` and the memory queue is emptied. */
    fun reset() = nativeReset(checkOpen())

    /**
     * Segments one RGB frame of exactly [ModelInfo.width] x [ModelInfo.height].
     *
     * @param rgb direct buffer, 3 bytes per pixel, rows [rowStride] bytes apart
     * @param mask direct buffer of width*height bytes; receives one class id per pixel
     * @return the interpreter invoke time in microseconds
     */
    fun segment(rgb: ByteBuffer, rowStride: Int, mask: ByteBuffer): Long {
        require(rgb.isDirect && mask.isDirect) { "use ByteBuffer.allocateDirect for rgb and mask" }
        return nativeSegment(checkOpen(), rgb, rowStride, mask)
    }

    /**
     * Applies one sparse-update packet (wire format MDUP v1) from a server: verifies it, patches
     * a copy of the model and builds + warms the new interpreter on the calling thread, so call
     * it from a background thread. The next [segment] runs on the new model; frames keep running
     * on the old one meanwhile. A refused packet leaves the model untouched.
     *
     * @return the engine's update record as JSON: `"status":"applied"` or `"rejected"` with a
     *   `reason` (bad_checksum, bad_hmac, replay, ...), `sequence` and the stage times in us
     */
    fun applyUpdate(packet: ByteArray): String = nativeApplyUpdate(checkOpen(), packet)

    /** Running statistics as JSON: frames, invoke p50/p90/p99 (last 1000), model_version, updates. */
    fun stats(): String = nativeStats(checkOpen())

    override fun close() {
        val old = handle
        handle = 0
        if (old != 0L) nativeDestroy(old)
    }

    private fun checkOpen(): Long =
        if (handle != 0L) handle else throw MobdistillException("the engine is closed")

    companion object {
        const val LIBRARY = "mobdistill_jni"

        init {
            System.loadLibrary(LIBRARY)
        }

        /** Loads `manifest` (verified by sha256) with the TFLite runtime in [runtimeLib]. */
        @JvmStatic
        @JvmOverloads
        fun open(
            manifest: String,
            runtimeLib: String,
            delegate: Delegate = Delegate.XNNPACK,
            numThreads: Int = 1,
            delegateLib: String? = null,
            updateKey: ByteArray? = null,
        ): MobdistillEngine = MobdistillEngine(
            nativeCreate(manifest, runtimeLib, delegateLib, delegate.flag, numThreads, updateKey))

        /** Runs the benchmark in-process with `mobdistill-engine` flags; returns its exit code. */
        @JvmStatic
        fun benchmark(args: List<String>): Int = nativeBenchmark(args.toTypedArray())

        @JvmStatic private external fun nativeCreate(
            manifest: String, runtimeLib: String, delegateLib: String?, delegate: String,
            numThreads: Int, updateKey: ByteArray?,
        ): Long
        @JvmStatic private external fun nativeDestroy(handle: Long)
        @JvmStatic private external fun nativeInfo(handle: Long): IntArray
        @JvmStatic private external fun nativeDelegateUsed(handle: Long): String
        @JvmStatic private external fun nativeReset(handle: Long)
        @JvmStatic private external fun nativeSegment(
            handle: Long, rgb: ByteBuffer, rowStride: Int, mask: ByteBuffer,
        ): Long
        @JvmStatic private external fun nativeBenchmark(args: Array<String>): Int
        @JvmStatic private external fun nativeApplyUpdate(handle: Long, packet: ByteArray): String
        @JvmStatic private external fun nativeStats(handle: Long): String
    }
}
