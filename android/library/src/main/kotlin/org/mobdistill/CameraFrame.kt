package org.mobdistill

import java.nio.ByteBuffer

/** One plane of a camera frame: CameraX's `ImageProxy.PlaneProxy` buffer and strides. */
class ImagePlane(val buffer: ByteBuffer, val rowStride: Int, val pixelStride: Int)

/**
 * A camera frame as the sensor delivered it (any size, not yet upright), for
 * [MobdistillEngine.segment]: the engine converts, rotates and resizes it to the model input
 * in one native pass. Pure JVM: an app builds it from an `ImageProxy` with
 * `CameraFrame(image.format, image.width, image.height, image.imageInfo.rotationDegrees,
 * image.planes.map { ImagePlane(it.buffer, it.rowStride, it.pixelStride) })`.
 *
 * @param format [RGBA_8888] (one plane) or [YUV_420_888] (Y, U, V; U and V at half size,
 *   planar or interleaved as NV21/NV12, with equal strides)
 * @param rotationDegrees clockwise rotation that makes the frame upright (0, 90, 180, 270)
 */
class CameraFrame(
    val format: Int,
    val width: Int,
    val height: Int,
    val rotationDegrees: Int,
    val planes: List<ImagePlane>,
) {
    init {
        require(planes.all { it.buffer.isDirect }) {
            "camera planes must be direct ByteBuffers (ImageProxy's, or ByteBuffer.allocateDirect)"
        }
    }

    private val turned get() = rotationDegrees == 90 || rotationDegrees == 270

    /** Width of the upright frame: what the preview shows. */
    val uprightWidth: Int get() = if (turned) height else width

    /** Height of the upright frame. */
    val uprightHeight: Int get() = if (turned) width else height

    // Each plane from its buffer's position on (slices share the bytes, no copy).
    internal fun buffers(): Array<ByteBuffer> = planes.map { it.buffer.slice() }.toTypedArray()

    internal fun strides(): IntArray =
        planes.flatMap { listOf(it.rowStride, it.pixelStride) }.toIntArray()

    companion object {
        /** Android's `PixelFormat.RGBA_8888`. */
        const val RGBA_8888 = 1

        /** Android's `ImageFormat.YUV_420_888`. */
        const val YUV_420_888 = 35

        /** An RGBA_8888 frame: 4 bytes per pixel, rows [rowStride] bytes apart. */
        @JvmStatic
        fun rgba(rgba: ByteBuffer, width: Int, height: Int, rowStride: Int,
                 rotationDegrees: Int): CameraFrame =
            CameraFrame(RGBA_8888, width, height, rotationDegrees,
                        listOf(ImagePlane(rgba, rowStride, 4)))

        /** A YUV_420_888 frame: Y (pixel stride 1), U and V sharing row and pixel strides. */
        @JvmStatic
        fun yuv420(y: ByteBuffer, yRowStride: Int, u: ByteBuffer, v: ByteBuffer,
                   uvRowStride: Int, uvPixelStride: Int, width: Int, height: Int,
                   rotationDegrees: Int): CameraFrame =
            CameraFrame(YUV_420_888, width, height, rotationDegrees,
                        listOf(ImagePlane(y, yRowStride, 1), ImagePlane(u, uvRowStride, uvPixelStride),
                               ImagePlane(v, uvRowStride, uvPixelStride)))
    }
}

/** A frame's timed stages in microseconds; preprocess includes the camera conversion. */
data class FrameTiming(val preprocessUs: Long, val invokeUs: Long, val postprocessUs: Long)
