// The desktop JVM's JpegEncoder for AmsClient (javax.imageio is not on Android, so it lives with
// the host checks, not in the library; the phone uses org.mobdistill.android.BitmapJpegEncoder).
import java.awt.image.BufferedImage
import java.io.ByteArrayOutputStream
import javax.imageio.IIOImage
import javax.imageio.ImageIO
import javax.imageio.ImageWriteParam
import org.mobdistill.JpegEncoder

class ImageIoJpegEncoder(private val quality: Float = 0.75f) : JpegEncoder {
    override fun encode(rgb: ByteArray, width: Int, height: Int): ByteArray {
        require(rgb.size == width * height * 3) { "expected ${width}x$height packed RGB" }
        val image = BufferedImage(width, height, BufferedImage.TYPE_INT_RGB)
        val pixels = IntArray(width * height) { i ->
            ((rgb[3 * i].toInt() and 0xff) shl 16) or ((rgb[3 * i + 1].toInt() and 0xff) shl 8) or
                (rgb[3 * i + 2].toInt() and 0xff)
        }
        image.setRGB(0, 0, width, height, pixels, 0, width)
        val writer = ImageIO.getImageWritersByFormatName("jpeg").next()
        val out = ByteArrayOutputStream()
        try {
            ImageIO.createImageOutputStream(out).use { stream ->
                writer.output = stream
                val param = writer.defaultWriteParam.apply {
                    compressionMode = ImageWriteParam.MODE_EXPLICIT
                    compressionQuality = quality
                }
                writer.write(null, IIOImage(image, null, null), param)
            }
        } finally {
            writer.dispose()
        }
        return out.toByteArray()
    }
}
