package org.mobdistill.android

import android.graphics.Bitmap
import java.io.ByteArrayOutputStream
import org.mobdistill.JpegEncoder

/**
 * The phone's [JpegEncoder] for [org.mobdistill.AmsClient]: Android's `Bitmap.compress`.
 * Android-only (android.graphics), so the desktop-JVM host check does not compile it; there
 * `javax.imageio` encodes (android/library/src/main/cpp/hostcheck/AmsClientJpeg.kt).
 * Quality 75 matches the host client's uplink (contract/uplink.py DEFAULT_JPEG_QUALITY).
 */
class BitmapJpegEncoder(private val quality: Int = 75) : JpegEncoder {
    init {
        require(quality in 1..100) { "JPEG quality must be 1..100, not $quality" }
    }

    override fun encode(rgb: ByteArray, width: Int, height: Int): ByteArray {
        require(rgb.size == width * height * 3) { "expected ${width}x$height packed RGB" }
        val pixels = IntArray(width * height) { i ->
            val r = rgb[3 * i].toInt() and 0xff
            val g = rgb[3 * i + 1].toInt() and 0xff
            val b = rgb[3 * i + 2].toInt() and 0xff
            (0xff shl 24) or (r shl 16) or (g shl 8) or b
        }
        val bitmap = Bitmap.createBitmap(pixels, width, height, Bitmap.Config.ARGB_8888)
        try {
            val out = ByteArrayOutputStream()
            check(bitmap.compress(Bitmap.CompressFormat.JPEG, quality, out)) {
                "Bitmap.compress could not encode a ${width}x$height JPEG"
            }
            return out.toByteArray()
        } finally {
            bitmap.recycle()
        }
    }
}
