package org.mobdistill.harness

import java.io.BufferedOutputStream
import java.io.File
import java.io.FileOutputStream
import java.io.RandomAccessFile
import java.nio.ByteBuffer
import javax.net.ssl.SSLSocketFactory
import org.mobdistill.AmsClient
import org.mobdistill.AmsConfig
import org.mobdistill.AmsStatus
import org.mobdistill.JpegEncoder
import org.mobdistill.MobdistillEngine

/**
 * The live mode's frame loop ([LiveRequest]): the engine plus the library's [AmsClient] against
 * `mobdistill serve`, fed the request's frames at its pace, as a camera would feed them. Pure
 * JVM; the app passes Android's JPEG encoder (org.mobdistill.android.BitmapJpegEncoder).
 * Writes one JSON line and one mask per frame as it goes, and the client's status at the end.
 */
fun runLive(request: LiveRequest, jpegEncoder: JpegEncoder) {
    val framesPath = requireNotNull(request.frames) { "the live run needs a frames file" }
    val (engine, config) = openLive(request, jpegEncoder)
    engine.use {
        val (h, w) = engine.info.height to engine.info.width
        val frameBytes = h * w * 3
        RandomAccessFile(framesPath, "r").use { frames ->
            val available = (frames.length() / frameBytes).toInt()
            require(available > 0) { "$framesPath holds no ${w}x$h RGB frame" }
            val count = request.maxFrames?.coerceAtMost(available) ?: available
            val rgb = ByteBuffer.allocateDirect(frameBytes)
            val mask = ByteBuffer.allocateDirect(h * w)
            val row = ByteArray(frameBytes)
            val maskBytes = ByteArray(h * w)
            AmsClient.connect(engine, config).use { client ->
                BufferedOutputStream(FileOutputStream(request.jsonl)).use { log ->
                    FileOutputStream(request.masks).use { masks ->
                        val start = System.nanoTime()
                        for (k in 0 until count) {
                            val at = start + (k * request.frameIntervalS * 1e9).toLong()
                            val wait = (at - System.nanoTime()) / 1_000_000
                            if (wait > 0) Thread.sleep(wait)
                            frames.readFully(row)
                            rgb.clear()
                            rgb.put(row).flip()
                            val invokeUs = client.analyze(rgb, w * 3, mask, at)
                            mask.rewind()
                            mask.get(maskBytes).rewind()
                            masks.write(maskBytes)
                            val sequence = client.status().modelSequence
                            log.write(("{\"frame\":$k,\"invoke_us\":$invokeUs," +
                                "\"model_sequence\":$sequence}\n").toByteArray())
                        }
                    }
                }
                client.close(drainMs = 5_000)
                writeAtomically(File(request.summary), statusJson(client.status(), count))
            }
        }
    }
}

/** The engine (with the request's key and device id) and the client's configuration. */
fun openLive(request: LiveRequest, jpegEncoder: JpegEncoder): Pair<MobdistillEngine, AmsConfig> {
    val key = request.keyFile?.let { File(it).readBytes() }
    val config = AmsConfig(
        request.host, request.port, request.deviceId, key,
        AmsClient.manifestSha256(File(request.manifest)), jpegEncoder,
        lastSequence = request.stateFile?.let { AmsClient.stateFileSequence(File(it)) } ?: 0,
        tls = if (request.tls) SSLSocketFactory.getDefault() as SSLSocketFactory else null,
    )
    val engine = MobdistillEngine.open(
        request.manifest, request.runtimeLib, request.delegate, request.numThreads, updateKey = key,
        deviceId = request.deviceId, insecureUpdates = request.insecure, stateFile = request.stateFile)
    return engine to config
}

/** The client's status as JSON: counters, its last error and every update it handled. */
fun statusJson(s: AmsStatus, frames: Int): String {
    fun text(value: String?) = value?.let {
        "\"" + it.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n") + "\""
    } ?: "null"
    val updates = s.updates.joinToString(",") {
        "{\"sequence\":${it.sequence},\"kind\":${text(it.kind)},\"status\":${text(it.status)}," +
            "\"reason\":${text(it.reason)},\"received_frame\":${it.receivedFrame}," +
            "\"swapped_frame\":${it.swappedFrame ?: "null"},\"apply_us\":${it.applyUs}}"
    }
    val error = s.lastError?.let {
        "{\"code\":${text(it.code)},\"message\":${text(it.message)},\"permanent\":${it.permanent}}"
    } ?: "null"
    return "{\"frames\":$frames,\"state\":${text(s.state.name)},\"last_error\":$error," +
        "\"model_sequence\":${s.modelSequence},\"frames_analyzed\":${s.framesAnalyzed}," +
        "\"frames_uploaded\":${s.framesUploaded},\"chunks_uploaded\":${s.chunksUploaded}," +
        "\"chunks_dropped\":${s.chunksDropped},\"uplink_bytes\":${s.uplinkBytes}," +
        "\"downlink_bytes\":${s.downlinkBytes},\"connections\":${s.connections}," +
        "\"updates\":[$updates]}\n"
}

/** Written under a dot name, then renamed: a host polling for [file] never reads half of it. */
fun writeAtomically(file: File, text: String) {
    val part = File(file.parentFile, ".${file.name}.part")
    part.writeText(text)
    check(part.renameTo(file)) { "could not rename $part to $file" }
}
