// Run by tests/engine/test_delta_jvm.py on a desktop JVM: MobdistillEngine's keyframe schedule
// (keyframeInterval, lastFrameWasKeyframe) through the JNI bridge on the real engine core with a
// real delta-distilled export. Args: work dir (frames.rgb, reference.u8: the masks of Python's
// reference schedule for the run below), delta manifest, a manifest without a schedule, runtime
// library, number of frames before the reset.
import java.io.File
import java.nio.ByteBuffer
import org.mobdistill.MobdistillEngine
import org.mobdistill.MobdistillException

private fun verify(ok: Boolean, what: String) {
    if (!ok) throw AssertionError(what)
    println("ok   $what")
}

fun main(args: Array<String>) {
    val dir = File(args[0])
    val runtime = args[3]
    val beforeReset = args[4].toInt()
    val frames = File(dir, "frames.rgb").readBytes()
    val reference = File(dir, "reference.u8").readBytes()
    MobdistillEngine.open(args[1], runtime).use { engine ->
        val h = engine.info.height
        val w = engine.info.width
        val count = frames.size / (h * w * 3)
        val period = engine.keyframeInterval
        verify(period >= 1, "a delta-distilled model reports its keyframe interval ($period)")
        verify(engine.lastFrameWasKeyframe == null, "no frame yet: lastFrameWasKeyframe is null")
        val rgb = ByteBuffer.allocateDirect(h * w * 3)
        val mask = ByteBuffer.allocateDirect(h * w)
        val kinds = StringBuilder()
        var agreeing = 0
        for (i in 0 until count) {
            if (i == beforeReset) {  // a new video, with T = 2 from here on
                engine.reset()
                engine.keyframeInterval = 2
            }
            rgb.clear()
            rgb.put(frames, i * h * w * 3, h * w * 3)
            engine.segment(rgb, w * 3, mask)
            kinds.append(if (engine.lastFrameWasKeyframe!!) 'K' else 'd')
            for (p in 0 until h * w) if (mask.get(p) == reference[i * h * w + p]) agreeing++
        }
        val expected = (0 until count).joinToString("") { i ->
            val t = if (i < beforeReset) period else 2
            val k = if (i < beforeReset) i else i - beforeReset
            if (k % t == 0) "K" else "d"
        }
        verify(kinds.toString() == expected, "keyframes follow the schedule: $kinds")
        val agreement = agreeing.toDouble() / (count * h * w)
        verify(agreement > 0.999, "masks agree with the Python reference schedule ($agreement)")
        verify(engine.keyframeInterval == 2, "the interval set is the one in use")
        val stats = engine.stats()
        verify(stats.contains("\"schedule\":{") && stats.contains("\"keyframe_interval\":2"),
               "stats() reports the schedule")
        try {
            engine.keyframeInterval = 0
            verify(false, "keyframeInterval = 0 throws")
        } catch (err: MobdistillException) {
            verify(err.message!!.contains(">= 1"), "keyframeInterval = 0 throws: ${err.message}")
        }
    }
    MobdistillEngine.open(args[2], runtime).use { engine ->
        val h = engine.info.height
        val w = engine.info.width
        engine.segment(ByteBuffer.allocateDirect(h * w * 3), w * 3, ByteBuffer.allocateDirect(h * w))
        verify(engine.keyframeInterval == 0 && engine.lastFrameWasKeyframe == null,
               "a model without a schedule: interval 0, lastFrameWasKeyframe null")
        try {
            engine.keyframeInterval = 3
            verify(false, "setting the interval of a model without a schedule throws")
        } catch (err: MobdistillException) {
            verify(err.message!!.contains("delta-distilled models only"),
                   "setting the interval of a model without a schedule throws: ${err.message}")
        }
    }
}
