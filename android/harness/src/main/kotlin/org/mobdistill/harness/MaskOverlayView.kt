package org.mobdistill.harness

import android.content.Context
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Paint
import android.graphics.Rect
import android.util.AttributeSet
import android.view.View

/** Draws the latest class-id mask, upscaled, half-transparent, over the camera preview. */
class MaskOverlayView(context: Context, attrs: AttributeSet?) : View(context, attrs) {
    private var bitmap: Bitmap? = null
    private val paint = Paint().apply { isFilterBitmap = true }
    private val colors = intArrayOf(0x00000000, 0x8000C853.toInt(), 0x802962FF, 0x80FF6D00.toInt())

    /** Called on the UI thread with width*height class ids. */
    fun show(mask: ByteArray, width: Int, height: Int) {
        val pixels = IntArray(width * height) { colors[(mask[it].toInt() and 0xFF) % colors.size] }
        val target = bitmap?.takeIf { it.width == width && it.height == height }
            ?: Bitmap.createBitmap(width, height, Bitmap.Config.ARGB_8888).also { bitmap = it }
        target.setPixels(pixels, 0, width, 0, 0, width, height)
        invalidate()
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        bitmap?.let { canvas.drawBitmap(it, null, Rect(0, 0, width, height), paint) }
    }
}
