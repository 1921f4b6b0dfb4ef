package org.mobdistill

import java.nio.ByteBuffer
import java.util.concurrent.locks.ReentrantReadWriteLock
import java.util.logging.Logger
import kotlin.concurrent.read
import kotlin.concurrent.write

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
 * Pure JVM (no android.* imports), so it also runs on a desktop JVM for host tests. Call
 * [segment] from one thread (CameraX's analyzer executor); [applyUpdate] and [stats] may run on
 * other threads at the same time. [close] waits for calls in progress and then frees the native
 * engine, so no call can use freed memory; afterwards every call throws [MobdistillException].
 */
class MobdistillEngine private constructor(private var handle: Long) : AutoCloseable {

    // Calls hold the read lock for as long as they use the native handle; close() takes the
    // write lock, so it waits for them and nothing starts on a handle being freed.
    private val lock = ReentrantReadWriteLock()

    /** Input size and classes, read once from the loaded manifest. */
    val info: ModelInfo = nativeInfo(handle).let { ModelInfo(it[0], it[1], it[2], it[3]) }

    /** The delegate that actually runs: a GPU request can silently fall back elsewhere. */
    val delegateUsed: String get() = withHandle { nativeDelegateUsed(it) }

    /**
     * Starts a new video: the next frame runs `init` and the memory queue is emptied (MobileVOS),
     * or runs `keyframe` (delta-distilled models).
     */
    fun reset() = withHandle { nativeReset(it) }

    /**
     * Delta-distilled models (a manifest `schedule`): every [keyframeInterval]-th frame runs the
     * original network (`keyframe`), the frames between the cheap `delta` signature on the state
     * carried from the frame before, so keyframes are the slow frames. The manifest's period
     * until set; a new value (>= 1) applies from the next frame (a longer one trades accuracy
     * for speed, e.g. while the phone runs hot). 0 for other models, where setting it throws.
     * A model update always makes its first frame a keyframe.
     */
    var keyframeInterval: Int
        get() = withHandle { nativeKeyframeInterval(it) }
        set(value) = withHandle { nativeSetKeyframeInterval(it, value) }

    /**
     * Whether the last [segment] ran the keyframe signature (true) or a delta frame (false);
     * null before the first frame and for models without a keyframe schedule.
     */
    val lastFrameWasKeyframe: Boolean?
        get() = withHandle { nativeLastFrameKeyframe(it) }.let { if (it < 0) null else it == 1 }

    /**
     * Segments one RGB frame of exactly [ModelInfo.width] x [ModelInfo.height].
     *
     * @param rgb direct buffer, 3 bytes per pixel, rows [rowStride] bytes apart
     * @param mask direct buffer of width*height bytes; receives one class id per pixel
     * @return the interpreter invoke time in microseconds
     */
    fun segment(rgb: ByteBuffer, rowStride: Int, mask: ByteBuffer): Long {
        require(rgb.isDirect && mask.isDirect) { "use ByteBuffer.allocateDirect for rgb and mask" }
        return withHandle { nativeSegment(it, rgb, rowStride, mask) }
    }

    /**
     * Segments one camera frame of any size: converted (RGBA or YUV, any strides), rotated
     * upright and resized to the model input in one native pass, timed as preprocessing.
     *
     * @param mask direct buffer of width*height bytes ([info]); receives the class ids of the
     *   UPRIGHT frame at model size ([maskToPreview] maps them onto the preview)
     */
    fun segment(frame: CameraFrame, mask: ByteBuffer): FrameTiming {
        require(mask.isDirect) { "use ByteBuffer.allocateDirect for the mask" }
        val timing = LongArray(3)
        withHandle {
            nativeSegmentImage(it, frame.format, frame.width, frame.height, frame.rotationDegrees,
                               frame.buffers(), frame.strides(), mask, timing)
        }
        return FrameTiming(timing[0], timing[1], timing[2])
    }

    /** [segment] of an RGBA_8888 camera frame (`ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888`). */
    fun segmentRgba(rgba: ByteBuffer, width: Int, height: Int, rowStride: Int,
                    rotationDegrees: Int, mask: ByteBuffer): FrameTiming =
        segment(CameraFrame.rgba(rgba, width, height, rowStride, rotationDegrees), mask)

    /** [segment] of a YUV_420_888 camera frame (CameraX's default analysis format). */
    fun segmentYuv(y: ByteBuffer, yRowStride: Int, u: ByteBuffer, v: ByteBuffer,
                   uvRowStride: Int, uvPixelStride: Int, width: Int, height: Int,
                   rotationDegrees: Int, mask: ByteBuffer): FrameTiming =
        segment(CameraFrame.yuv420(y, yRowStride, u, v, uvRowStride, uvPixelStride, width, height,
                                   rotationDegrees), mask)

    /**
     * Applies one sparse-update packet (wire format MDUP v2) from a server: verifies it, patches
     * a copy of the model and builds + warms the new interpreter on the calling thread, so call
     * it from a background thread. The next [segment] runs on the new model; frames keep running
     * on the old one meanwhile. A refused packet leaves the model untouched.
     *
     * @return the engine's update record as JSON: `"status":"applied"` or `"rejected"` with a
     *   `reason` (bad_checksum, bad_hmac, wrong_device, replay, ...), `sequence` and the stage
     *   times in us
     */
    fun applyUpdate(packet: ByteArray): String = withHandle { nativeApplyUpdate(it, packet) }

    /** Running statistics as JSON: frames, invoke p50/p90/p99 (last 1000), model_version, updates. */
    fun stats(): String = withHandle { nativeStats(it) }

    /** Waits for calls in progress on other threads, then frees the native engine (once). */
    override fun close() {
        lock.write {
            val old = handle
            handle = 0
            if (old != 0L) nativeDestroy(old)
        }
    }

    private inline fun <T> withHandle(call: (Long) -> T): T = lock.read {
        val h = handle
        if (h == 0L) throw MobdistillException("the engine is closed; open a new MobdistillEngine")
        call(h)
    }

    companion object {
        const val LIBRARY = "mobdistill_jni"

        init {
            System.loadLibrary(LIBRARY)
        }

        const val DEVICE_ID_BYTES = 16
        private val log: Logger = Logger.getLogger("mobdistill")

        /**
         * Loads `manifest` (verified by sha256) with the TFLite runtime in [runtimeLib].
         *
         * Updates are authenticated by default: pass this device's [updateKey] (HMAC-SHA256) and
         * [deviceId] (16 bytes, the id the server binds its packets to). Without a key every
         * packet is refused (`bad_hmac`) unless [insecureUpdates] is set explicitly — then any
         * app on the phone that reaches the update channel can rewrite the model; only for
         * experiments, and it is logged as a warning. [stateFile] (e.g. in the app's private
         * files folder) keeps the last applied sequence across restarts, so packets accepted
         * before cannot be replayed after the app restarts.
         */
        @JvmStatic
        @JvmOverloads
        fun open(
            manifest: String,
            runtimeLib: String,
            delegate: Delegate = Delegate.XNNPACK,
            numThreads: Int = 1,
            delegateLib: String? = null,
            updateKey: ByteArray? = null,
            deviceId: ByteArray? = null,
            insecureUpdates: Boolean = false,
            stateFile: String? = null,
        ): MobdistillEngine {
            require(deviceId == null || deviceId.size == DEVICE_ID_BYTES) {
                "deviceId must be $DEVICE_ID_BYTES bytes, not ${deviceId?.size}"
            }
            require(updateKey == null || deviceId != null) {
                "an updateKey needs the deviceId the server binds packets to"
            }
            require(!(insecureUpdates && updateKey != null)) {
                "pass either updateKey or insecureUpdates = true, not both"
            }
            if (insecureUpdates) {
                log.warning("mobdistill: INSECURE updates: unauthenticated packets are accepted; " +
                            "anyone reaching the update channel can rewrite the model. Use a " +
                            "per-device updateKey outside experiments.")
            }
            return MobdistillEngine(nativeCreate(manifest, runtimeLib, delegateLib, delegate.flag,
                                                 numThreads, updateKey, deviceId, insecureUpdates,
                                                 stateFile))
        }

        /**
         * The engine's camera conversion alone: [frame] -> upright packed RGB of
         * [outWidth] x [outHeight] in [rgb] (direct, outWidth*outHeight*3 bytes), exactly what
         * [segment] feeds the model. Needs no engine.
         */
        @JvmStatic
        fun convert(frame: CameraFrame, outWidth: Int, outHeight: Int, rgb: ByteBuffer) =
            nativeConvertImage(frame.format, frame.width, frame.height, frame.rotationDegrees,
                               frame.buffers(), frame.strides(), outWidth, outHeight, rgb)

        /**
         * An upright model mask ([maskWidth] x [maskHeight], from [segment]) onto a preview of
         * [outWidth] x [outHeight] showing the same upright frame ([CameraFrame.uprightWidth]
         * x [CameraFrame.uprightHeight] at full size): nearest class, pixel centres aligned.
         */
        @JvmStatic
        fun maskToPreview(mask: ByteBuffer, maskWidth: Int, maskHeight: Int, out: ByteBuffer,
                          outWidth: Int, outHeight: Int) =
            nativeMaskToPreview(mask, maskWidth, maskHeight, out, outWidth, outHeight)

        /** Runs the benchmark in-process with `mobdistill-engine` flags; returns its exit code. */
        @JvmStatic
        fun benchmark(args: List<String>): Int = nativeBenchmark(args.toTypedArray())

        @JvmStatic private external fun nativeCreate(
            manifest: String, runtimeLib: String, delegateLib: String?, delegate: String,
            numThreads: Int, updateKey: ByteArray?, deviceId: ByteArray?, insecureUpdates: Boolean,
            stateFile: String?,
        ): Long
        @JvmStatic private external fun nativeDestroy(handle: Long)
        @JvmStatic private external fun nativeInfo(handle: Long): IntArray
        @JvmStatic private external fun nativeDelegateUsed(handle: Long): String
        @JvmStatic private external fun nativeReset(handle: Long)
        @JvmStatic private external fun nativeKeyframeInterval(handle: Long): Int
        @JvmStatic private external fun nativeSetKeyframeInterval(handle: Long, interval: Int)
        @JvmStatic private external fun nativeLastFrameKeyframe(handle: Long): Int
        @JvmStatic private external fun nativeSegment(
            handle: Long, rgb: ByteBuffer, rowStride: Int, mask: ByteBuffer,
        ): Long
        @JvmStatic private external fun nativeSegmentImage(
            handle: Long, format: Int, width: Int, height: Int, rotation: Int,
            planes: Array<ByteBuffer>, strides: IntArray, mask: ByteBuffer, timing: LongArray,
        )
        @JvmStatic private external fun nativeConvertImage(
            format: Int, width: Int, height: Int, rotation: Int, planes: Array<ByteBuffer>,
            strides: IntArray, outWidth: Int, outHeight: Int, rgb: ByteBuffer,
        )
        @JvmStatic private external fun nativeMaskToPreview(
            mask: ByteBuffer, maskWidth: Int, maskHeight: Int, out: ByteBuffer, outWidth: Int,
            outHeight: Int,
        )
        @JvmStatic private external fun nativeBenchmark(args: Array<String>): Int
        @JvmStatic private external fun nativeApplyUpdate(handle: Long, packet: ByteArray): String
        @JvmStatic private external fun nativeStats(handle: Long): String
    }
}
