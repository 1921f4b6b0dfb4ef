// Run by tests/live/test_kotlin_client.py on a desktop JVM: the library's AmsClient, over real
// sockets, against the REAL `mobdistill serve` process, through the real engine (JNI -> engine
// core -> TFLite C API). Frames go up, the server's packets are applied between frames and the
// masks change; a dead server, garbage from a peer and a wrong key surface in status() while
// analyze() keeps segmenting. Args: work dir (frames.rgb: the clip at the model size, packed
// RGB), manifest, runtime library, server port, device id (hex), key file, a port nobody
// listens on. Writes ams_client.json (updates as the client saw them) into the work dir.
import java.io.File
import java.net.ServerSocket
import java.nio.ByteBuffer
import javax.net.ssl.SSLSocketFactory
import kotlin.concurrent.thread
import org.mobdistill.AmsClient
import org.mobdistill.AmsConfig
import org.mobdistill.AmsState
import org.mobdistill.AmsStatus
import org.mobdistill.CameraFrame
import org.mobdistill.MobdistillEngine

internal object AmsClientChecks { // AmsClientTlsCheck.kt reuses it
    const val FPS = 30.0
    const val LIVE_DEADLINE_MS = 60_000L // only a failing run waits this long
    const val SERVER_START_MS = 120_000L

    fun ok(passed: Boolean, what: String) {
        if (!passed) throw AssertionError(what)
        println("ok   $what")
    }

    class Clip(bytes: ByteArray, val height: Int, val width: Int) {
        private val frameBytes = height * width * 3
        val count = bytes.size / frameBytes
        private val frames = List(count) { k ->
            ByteBuffer.allocateDirect(frameBytes).put(bytes, k * frameBytes, frameBytes)
        }

        fun frame(k: Int): ByteBuffer = frames[k % count]

        // The same frames as a camera would hand them over (RGBA_8888, upright, model size).
        private val rgba = frames.map { rgb ->
            ByteBuffer.allocateDirect(height * width * 4).also { out ->
                for (i in 0 until height * width) {
                    for (c in 0 until 3) out.put(4 * i + c, rgb.get(3 * i + c))
                    out.put(4 * i + 3, -1)
                }
            }
        }

        fun camera(k: Int): CameraFrame = CameraFrame.rgba(rgba[k % count], width, height,
                                                           width * 4, 0)
    }

    class Target(
        val host: String, val port: Int, val deviceId: ByteArray, val key: ByteArray?,
        val sha: String,
    )

    fun config(target: Target, retryMinMs: Long = 300, tls: SSLSocketFactory? = null) =
        AmsConfig(target.host, target.port, target.deviceId, target.key, target.sha,
                  ImageIoJpegEncoder(), tls = tls, connectTimeoutMs = 2_000,
                  retryMinMs = retryMinMs, retryMaxMs = 1_000)

    /**
     * Plays [clip] through [client] until [done] holds (or the deadline), at [FPS] in real
     * time when [paced]; every mask is compared with the base model's ([reference]). Returns,
     * per frame, whether the client's mask differed from the base model's.
     */
    fun play(client: AmsClient, reference: MobdistillEngine, clip: Clip, paced: Boolean,
             deadlineMs: Long, camera: Boolean = false,
             done: (AmsStatus, Int) -> Boolean): List<Boolean> {
        val mask = ByteBuffer.allocateDirect(clip.height * clip.width)
        val want = ByteBuffer.allocateDirect(clip.height * clip.width)
        val differs = ArrayList<Boolean>()
        val start = System.nanoTime()
        var k = 0
        while (!done(client.status(), k)) {
            val at = start + (k * 1e9 / FPS).toLong()
            if (paced) Thread.sleep(maxOf(0L, (at - System.nanoTime()) / 1_000_000))
            if ((System.nanoTime() - start) / 1_000_000 > deadlineMs) {
                throw AssertionError("not done after ${deadlineMs / 1000} s: ${client.status()}")
            }
            if (camera) { // through the engine's camera conversion on both sides
                client.analyze(clip.camera(k), mask, at)
                reference.segment(clip.camera(k), want)
            } else {
                client.analyze(clip.frame(k), clip.width * 3, mask, at)
                reference.segment(clip.frame(k), clip.width * 3, want)
            }
            differs.add(mask != want)
            k++
        }
        return differs
    }

    fun waitFor(client: AmsClient, reference: MobdistillEngine, clip: Clip, what: String,
                deadlineMs: Long = 10_000, camera: Boolean = false,
                predicate: (AmsStatus) -> Boolean): AmsStatus {
        val differs = play(client, reference, clip, paced = true, deadlineMs, camera) { s, _ ->
            predicate(s)
        }
        // No packet arrives in these cases: every mask must still be the base model's.
        if (differs.any { it }) throw AssertionError("$what: a mask differs from the base model's")
        return client.status().also {
            println("     $what: ${it.state} after ${differs.size} frames, ${it.lastError}")
        }
    }

    /** A peer that answers every connection with [reply] (after reading the client's preface). */
    fun fakeServer(reply: ByteArray): ServerSocket {
        val server = ServerSocket(0)
        thread(isDaemon = true) {
            while (!server.isClosed) {
                try {
                    server.accept().use { s ->
                        s.getInputStream().readNBytes(6)
                        s.getOutputStream().write(reply)
                        s.getOutputStream().flush()
                        Thread.sleep(200)
                    }
                } catch (err: Exception) {
                    if (!server.isClosed) throw err
                }
            }
        }
        return server
    }

    fun frameBytes(type: Int, header: ByteArray, length: Long = 5L + header.size): ByteArray =
        ByteBuffer.allocate(9 + header.size).putInt(length.toInt()).put(type.toByte())
            .putInt(header.size).put(header).array()

    val PREFACE = byteArrayOf('M'.code.toByte(), 'D'.code.toByte(), 'L'.code.toByte(),
                              'V'.code.toByte(), 0, 1)

    fun local(target: Target, port: Int) =
        Target("127.0.0.1", port, target.deviceId, target.key, target.sha)

    fun faults(target: Target, deadPort: Int, engine: MobdistillEngine,
               reference: MobdistillEngine, clip: Clip) {
        AmsClient.connect(engine, config(local(target, deadPort), retryMinMs = 50)).use { client ->
            val s = waitFor(client, reference, clip, "no server (camera frames)", camera = true) {
                it.lastError != null && it.framesAnalyzed >= 10
            }
            val error = s.lastError!!
            ok(s.state == AmsState.RETRYING && error.code == "connection" &&
                   error.message.contains("$deadPort"),
               "no server: status says which address failed and the client keeps retrying")
        }
        val garbage = listOf(
            "too_large" to PREFACE + frameBytes(7, ByteArray(0), length = 0xfff0_0000L),
            "malformed" to PREFACE + frameBytes(2, "{\"auth\": [1, 2".toByteArray()),
            "bad_type" to PREFACE + frameBytes(99, ByteArray(0)),
            "bad_type" to PREFACE + frameBytes(1, "{}".toByteArray()), // HELLO comes from devices
            "bad_preface" to "HTTP/1.1 400 Bad Request\r\n\r\n".toByteArray(),
        )
        for ((code, reply) in garbage) {
            fakeServer(reply).use { peer ->
                AmsClient.connect(engine, config(local(target, peer.localPort), 50)).use { client ->
                    val s = waitFor(client, reference, clip, "garbage $code") {
                        it.lastError != null
                    }
                    val permanent = code == "bad_preface"
                    val error = s.lastError!!
                    ok(error.code == code && error.permanent == permanent &&
                           s.state == (if (permanent) AmsState.FAILED else AmsState.RETRYING),
                       "garbage from a peer: [$code] ${error.message}")
                }
            }
        }
        val wrongKey = target.key!!.copyOf().also { it[0] = (it[0] + 1).toByte() }
        // The test starts the server while the checks above run: the first client here retries
        // (connection refused) until it is up.
        for ((what, bad) in listOf(
            "a wrong key" to Target(target.host, target.port, target.deviceId, wrongKey,
                                    target.sha),
            "another model" to Target(target.host, target.port, target.deviceId, target.key,
                                      "00".repeat(32)))) {
            AmsClient.connect(engine, config(bad)).use { client ->
                val s = waitFor(client, reference, clip, what, SERVER_START_MS) {
                    it.state == AmsState.FAILED
                }
                val error = s.lastError!!
                ok(error.permanent && error.code ==
                       (if (bad.key.contentEquals(wrongKey)) "auth_failed" else "wrong_model"),
                   "$what against the real server: [${error.code}] ${error.message}")
            }
        }
        ok(engine.stats().contains("\"received\":0"), "no fault reached the engine")
    }

    fun live(target: Target, engine: MobdistillEngine, reference: MobdistillEngine, clip: Clip,
             out: File) {
        val client = AmsClient.connect(engine, config(target))
        var swappedAt = Int.MAX_VALUE
        val differs = play(client, reference, clip, paced = true, LIVE_DEADLINE_MS) { s, k ->
            val swaps = s.updates.mapNotNull { it.swappedFrame }
            swaps.firstOrNull()?.let { swappedAt = minOf(swappedAt, it.toInt()) }
            swaps.isNotEmpty() && k > swaps.max() + 15 // one phase: ~7 s on a loaded 2-core host
        }
        client.close(drainMs = 30_000) // the server may be training this device: wait for it
        val s = client.status()
        ok(s.state == AmsState.CLOSED && s.connections == 1L && s.lastError == null,
           "one connection, no error, closed cleanly")
        ok(s.framesUploaded > 0 && s.chunksUploaded > 0 && s.uplinkBytes > 0,
           "frames went up: ${s.framesUploaded} frames in ${s.chunksUploaded} JPEG chunks " +
               "(${s.uplinkBytes} B) of ${s.framesAnalyzed} analyzed")
        val applied = s.updates.filter { it.status == "applied" }
        ok(applied.isNotEmpty() && s.updates.all { it.status == "applied" } &&
               applied.zipWithNext().all { (a, b) -> b.sequence == a.sequence + 1 } &&
               applied.all { it.swappedFrame!! >= it.receivedFrame && it.applyUs > 0 },
           "updates applied in sequence off the analyzer thread: " +
               applied.joinToString { "#${it.sequence} received@${it.receivedFrame} " +
                                      "swapped@${it.swappedFrame} ${it.applyUs.toLong()} us" })
        val stats = engine.stats()
        ok(stats.contains("\"model_version\":${applied.last().sequence}") &&
               stats.contains("\"rejected\":0"), "the engine runs the last packet's model")
        ok(differs.take(swappedAt).none { it },
           "before the first swap (frame $swappedAt) every mask is the base model's")
        val changed = differs.drop(swappedAt).count { it }
        ok(changed > 0, "after it the masks change: $changed of ${differs.size - swappedAt} frames")
        val rows = applied.joinToString(",") {
            "{\"sequence\":${it.sequence},\"swapped_frame\":${it.swappedFrame}," +
                "\"received_frame\":${it.receivedFrame}}"
        }
        File(out, "ams_client.json").writeText(
            "{\"updates\":[$rows],\"frames\":${s.framesAnalyzed},\"frames_uploaded\":" +
                "${s.framesUploaded},\"model_sequence\":${s.modelSequence}}\n")
    }

    fun run(args: Array<String>) {
        val dir = File(args[0])
        val manifest = args[1]
        val runtime = args[2]
        val deviceId = args[4].chunked(2).map { it.toInt(16).toByte() }.toByteArray()
        val target = Target("127.0.0.1", args[3].toInt(), deviceId, File(args[5]).readBytes(),
                            AmsClient.manifestSha256(File(manifest)))
        MobdistillEngine.open(manifest, runtime).use { reference ->
            val clip = Clip(File(dir, "frames.rgb").readBytes(), reference.info.height,
                            reference.info.width)
            MobdistillEngine.open(manifest, runtime, updateKey = target.key, deviceId = deviceId,
                                  stateFile = File(dir, "engine.state").path).use { engine ->
                faults(target, args[6].toInt(), engine, reference, clip)
                live(target, engine, reference, clip, dir)
            }
        }
        println("AmsClient check passed")
    }
}

fun main(args: Array<String>) = AmsClientChecks.run(args)
