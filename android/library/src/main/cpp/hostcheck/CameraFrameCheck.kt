// Run by tests/engine/test_camera_jvm.py on a desktop JVM: camera frames through the Kotlin API
// -> JNI -> the real engine core. Args: work dir, manifest, runtime library. The work dir holds
// cases.txt, one line per frame:
//   LAYOUT ROTATION FORMAT WIDTH HEIGHT REFERENCE.rgb (FILE OFFSET LENGTH ROW_STRIDE PIXEL_STRIDE)...
// each plane a view of a file's bytes (NV21's U and V are two views of one buffer, as on a
// phone), REFERENCE.rgb Pillow's upright model-sized frame.
import java.io.File
import java.nio.ByteBuffer
import org.mobdistill.CameraFrame
import org.mobdistill.ImagePlane
import org.mobdistill.MobdistillEngine
import org.mobdistill.MobdistillException

fun ok(condition: Boolean, what: String) {
    if (!condition) throw AssertionError(what)
    println("ok   $what")
}

class Case(val label: String, val frame: CameraFrame, val reference: ByteArray)

fun readCases(dir: File): List<Case> {
    val files = HashMap<String, ByteBuffer>()
    fun bytes(name: String) = files.getOrPut(name) {
        val data = File(dir, name).readBytes()
        ByteBuffer.allocateDirect(data.size).put(data).also { it.flip() }
    }
    return File(dir, "cases.txt").readLines().filter { it.isNotBlank() }.map { line ->
        val f = line.trim().split(" ")
        val planes = f.drop(6).chunked(5).map { (name, offset, length, row, pixel) ->
            val view = bytes(name).duplicate()
            view.position(offset.toInt()).limit(offset.toInt() + length.toInt())
            ImagePlane(view.slice(), row.toInt(), pixel.toInt())
        }
        Case("${f[0]} ${f[1]}", CameraFrame(f[2].toInt(), f[3].toInt(), f[4].toInt(), f[1].toInt(),
                                            planes), File(dir, f[5]).readBytes())
    }
}

fun maxDifference(a: ByteBuffer, b: ByteArray): Int =
    b.indices.maxOf { Math.abs((a.get(it).toInt() and 0xFF) - (b[it].toInt() and 0xFF)) }

fun main(args: Array<String>) {
    val cases = readCases(File(args[0]))
    MobdistillEngine.open(args[1], args[2]).use { engine ->
        val h = engine.info.height
        val w = engine.info.width
        val rgb = ByteBuffer.allocateDirect(h * w * 3)
        val mask = ByteBuffer.allocateDirect(h * w)
        val want = ByteBuffer.allocateDirect(h * w)
        for (case in cases) {
            MobdistillEngine.convert(case.frame, w, h, rgb)
            val difference = maxDifference(rgb, case.reference)
            ok(difference <= 2, "${case.label}: model input within $difference of Pillow's")
            val timing = engine.segment(case.frame, mask)
            val reference = ByteBuffer.allocateDirect(h * w * 3).put(case.reference)
            engine.segment(reference, w * 3, want)
            val same = (0 until h * w).count { mask.get(it) == want.get(it) }
            val classes = (0 until h * w).map { want.get(it) }.toSet().size
            ok(classes >= 3 && same >= 0.98 * h * w,
               "${case.label}: mask agrees with the reference frame's on $same of ${h * w} " +
               "pixels ($classes classes); preprocess ${timing.preprocessUs} us")
            ok(timing.preprocessUs > 0 && timing.invokeUs > 0, "${case.label}: stages timed")
            val pw = case.frame.uprightWidth
            val ph = case.frame.uprightHeight
            val preview = ByteBuffer.allocateDirect(pw * ph)
            MobdistillEngine.maskToPreview(mask, w, h, preview, pw, ph)
            val nearest = (0 until ph step 7).all { y ->
                (0 until pw step 5).all { x ->
                    preview.get(y * pw + x) == mask.get(((2 * y + 1) * h / (2 * ph)) * w +
                                                        (2 * x + 1) * w / (2 * pw))
                }
            }
            ok(nearest, "${case.label}: mask mapped onto the ${pw}x$ph preview")
        }
        val last = cases.last().frame
        val short = last.planes.mapIndexed { i, p ->
            if (i != last.planes.size - 1) p
            else ImagePlane(p.buffer.duplicate().also { it.limit(it.limit() - 40) }.slice(),
                            p.rowStride, p.pixelStride)
        }
        try {
            engine.segment(CameraFrame(last.format, last.width, last.height, 0, short), mask)
            ok(false, "a plane shorter than its strides reach is refused")
        } catch (err: MobdistillException) {
            ok(err.message!!.contains("need"), "a short plane is refused: ${err.message}")
        }
        try {
            CameraFrame.rgba(ByteBuffer.allocate(64), 4, 4, 16, 0)
            ok(false, "a heap buffer is refused")
        } catch (err: IllegalArgumentException) {
            ok(err.message!!.contains("direct"), "a heap buffer is refused with the fix")
        }
    }
}
