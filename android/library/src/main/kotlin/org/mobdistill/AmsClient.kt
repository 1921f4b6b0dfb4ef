package org.mobdistill

import java.io.File
import java.io.IOException
import java.net.InetSocketAddress
import java.net.Socket
import java.nio.ByteBuffer
import java.security.SecureRandom
import java.util.concurrent.ArrayBlockingQueue
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicLong
import java.util.logging.Level
import java.util.logging.Logger
import javax.net.ssl.SSLSocket
import javax.net.ssl.SSLSocketFactory
import kotlin.concurrent.thread

/** Encodes one packed RGB frame (3 bytes per pixel, no row padding) as a JPEG. */
fun interface JpegEncoder {
    fun encode(rgb: ByteArray, width: Int, height: Int): ByteArray
}

/**
 * How to reach `mobdistill serve` as one enrolled device.
 *
 * @param key the device key from `mobdistill serve --enroll` (HMAC-SHA256, the same key the
 *   engine verifies packets with); null only against a server run with `--insecure-updates`
 * @param baseSha256 sha256 of the deployed .tflite ([AmsClient.manifestSha256])
 * @param lastSequence the engine's accepted high-water mark after a restart
 *   ([AmsClient.stateFileSequence] of its state file)
 * @param tls connect with TLS (the factory's trust decides which servers are accepted; the
 *   host name is verified); null: plain TCP, for loopback or `adb reverse` only
 */
class AmsConfig(
    val host: String,
    val port: Int,
    val deviceId: ByteArray,
    val key: ByteArray?,
    val baseSha256: String,
    val jpegEncoder: JpegEncoder,
    val lastSequence: Long = 0,
    val tls: SSLSocketFactory? = null,
    val connectTimeoutMs: Int = 5_000,
    val maxUpdateBytes: Int = 64 * 1024 * 1024,
    val retryMinMs: Long = 300,
    val retryMaxMs: Long = 5_000,
) {
    init {
        require(deviceId.size == MobdistillEngine.DEVICE_ID_BYTES) {
            "deviceId must be ${MobdistillEngine.DEVICE_ID_BYTES} bytes, not ${deviceId.size}"
        }
        require(port in 1..65535) { "port $port is not a TCP port" }
    }
}

enum class AmsState { CONNECTING, CONNECTED, RETRYING, FAILED, CLOSED }

/** The last thing that went wrong; [permanent] errors (bad key, wrong model) end retrying. */
data class AmsError(val code: String, val message: String, val permanent: Boolean)

/** One update packet as this device handled it; [swappedFrame] is the first frame it ran on. */
data class AmsUpdate(
    val sequence: Long,
    val kind: String,
    val status: String,
    val reason: String?,
    val receivedFrame: Long,
    val swappedFrame: Long?,
    val applyUs: Double,
)

data class AmsStatus(
    val state: AmsState,
    val lastError: AmsError?,
    val modelSequence: Long,
    val lastSequence: Long,
    val sampleFps: Double,
    val uploadIntervalS: Double,
    val hibernating: Boolean,
    val framesAnalyzed: Long,
    val framesUploaded: Long,
    val chunksUploaded: Long,
    val chunksDropped: Long,
    val uplinkBytes: Long,
    val downlinkBytes: Long,
    val connections: Long,
    val updates: List<AmsUpdate>,
)

/**
 * A live AMS device (docs/protocol.md) around a [MobdistillEngine]: call [analyze] from the
 * camera's analyzer thread (frame in, mask out); the uplink, rate control and updates run on
 * three background threads, so network trouble never blocks or throws into the analyzer. It
 * samples frames at the server's rate, uploads each upload interval's samples as one JPEG
 * chunk, applies the packets the server trains (through [MobdistillEngine.applyUpdate], off
 * the analyzer thread) and acknowledges each with the frame the new model first ran on. It
 * reconnects with back-off and resumes (the server brings the model back in step); errors are
 * reported in [status]. Start it with [connect]; [close] stops it and leaves the engine open.
 */
class AmsClient private constructor(
    private val engine: MobdistillEngine,
    private val config: AmsConfig,
) : AutoCloseable {
    private val height = engine.info.height
    private val width = engine.info.width
    private val stop = CountDownLatch(1)
    private val lock = Any() // guards the fields below it
    private var state = AmsState.CONNECTING
    private var lastError: AmsError? = null
    private var lastLogged: AmsError? = null // cleared by a connection
    private var modelSequence = 0L // what the running (or prepared) model holds
    private var lastSequence = config.lastSequence // the engine's high-water mark
    private val pendingSwaps = ArrayDeque<AmsUpdate>() // applied, not yet run on a frame
    private val swapFrames = ArrayDeque<Long>() // frames the engine's model version moved on
    private var applying = false // a packet is inside engine.applyUpdate
    private val updates = ArrayDeque<AmsUpdate>()

    @Volatile private var channel: AmsChannel? = null
    @Volatile private var socket: Socket? = null
    @Volatile private var sampleFps = 1.0
    @Volatile private var uploadIntervalS = 2.0
    @Volatile private var hibernating = false
    @Volatile private var heartbeatS = 5.0
    @Volatile private var maxChunkBytes = AmsWire.DEFAULT_MAX_CHUNK_BYTES
    @Volatile private var streamTimeS = 0.0

    private val framesAnalyzed = AtomicLong()
    private val framesUploaded = AtomicLong()
    private val chunksUploaded = AtomicLong()
    private val chunksDropped = AtomicLong()
    private val uplinkBytes = AtomicLong()
    private val downlinkBytes = AtomicLong()
    private val connections = AtomicLong()

    // Bounded hand-offs: at most 2 chunks waiting for the link, 8 packets for the engine,
    // 32 control messages (acks); what does not fit is dropped and counted, never hoarded.
    private val chunks = ArrayBlockingQueue<Chunk>(2)
    private val packets = ArrayBlockingQueue<Pair<AmsUpdate, ByteArray>>(8)
    private val control = ArrayBlockingQueue<AmsMessage>(32)

    // Analyzer-thread state.
    private val modelRgb by lazy { ByteBuffer.allocateDirect(height * width * 3) }
    private var engineVersion = engineModelVersion() // the engine's swap count
    private var firstTimestampNs = Long.MIN_VALUE
    private var nextSampleS = 0.0
    private var uploadAtS = Double.NaN
    private var sampled = Chunk()

    private val threads = listOf(
        thread(start = false, isDaemon = true, name = "ams-network") { networkLoop() },
        thread(start = false, isDaemon = true, name = "ams-uplink") { uplinkLoop() },
        thread(start = false, isDaemon = true, name = "ams-apply") { applyLoop() },
    )

    private class Chunk {
        val frames = ArrayList<ByteArray>()
        val timesS = ArrayList<Double>()
        var uploadTimeS = 0.0
    }

    /**
     * Segments one frame on the calling thread (as [MobdistillEngine.segment]) and feeds the
     * uplink. [timestampNs] is the frame's capture time on a monotonic clock (CameraX:
     * `imageProxy.imageInfo.timestamp`); the stream clock starts at the first frame.
     * Only the engine's own errors (a wrong buffer size, a closed engine) are thrown.
     *
     * @return the interpreter invoke time in microseconds
     */
    fun analyze(rgb: ByteBuffer, rowStride: Int, mask: ByteBuffer, timestampNs: Long): Long {
        val frame = framesAnalyzed.get()
        val invokeUs = engine.segment(rgb, rowStride, mask)
        framesAnalyzed.incrementAndGet()
        try {
            noteSwaps(frame)
            feedUplink(rgb, rowStride, timestampNs)
        } catch (err: RuntimeException) { // a client bug must not take the camera down
            report("client", "uplink bookkeeping failed: $err", permanent = false)
        }
        return invokeUs
    }

    /**
     * [analyze] for a camera frame as CameraX delivers it ([CameraFrame]: YUV or RGBA, any
     * size and rotation): the engine converts it to the model input ([MobdistillEngine.convert]),
     * and that RGB is segmented and, when sampled, uploaded.
     */
    fun analyze(frame: CameraFrame, mask: ByteBuffer, timestampNs: Long): Long {
        MobdistillEngine.convert(frame, width, height, modelRgb)
        return analyze(modelRgb, width * 3, mask, timestampNs)
    }

    fun status(): AmsStatus = synchronized(lock) {
        AmsStatus(state, lastError, modelSequence, lastSequence, sampleFps, uploadIntervalS,
                  hibernating, framesAnalyzed.get(), framesUploaded.get(), chunksUploaded.get(),
                  chunksDropped.get(), uplinkBytes.get(), downlinkBytes.get(), connections.get(),
                  updates.toList())
    }

    /** [close] with a 2 s drain: short enough for an activity's onDestroy. */
    override fun close() = close(drainMs = 2_000)

    /**
     * Sends the last acks and BYE, then waits up to [drainMs] for the server to close the
     * connection: the server reads a device's messages in order behind its uplink chunks (and
     * holds them back while it trains that device), so only then has it seen the acks. Stops
     * the threads; the engine stays open (the app owns it).
     */
    fun close(drainMs: Long) {
        if (stop.count == 0L) return
        stop.countDown()
        threads[1].join(2_000) // the uplink thread sends the acks and BYE on its way out
        threads[0].join(drainMs) // the network thread reads until the server closes
        socket?.close()
        threads.forEach { it.join(5_000) }
        synchronized(lock) { state = AmsState.CLOSED }
    }

    // ------------------------------------------------------------------------- analyzer side
    private fun feedUplink(rgb: ByteBuffer, rowStride: Int, timestampNs: Long) {
        if (firstTimestampNs == Long.MIN_VALUE) firstTimestampNs = timestampNs
        val t = (timestampNs - firstTimestampNs) / 1e9
        streamTimeS = t
        if (uploadAtS.isNaN()) uploadAtS = uploadIntervalS
        if (t >= uploadAtS - 1e-9) {
            if (sampled.frames.isNotEmpty()) {
                sampled.uploadTimeS = uploadAtS
                // A link slower than the camera drops chunks; it never hoards frames.
                if (!chunks.offer(sampled)) chunksDropped.incrementAndGet()
                sampled = Chunk()
            }
            while (uploadAtS <= t + 1e-9) uploadAtS += uploadIntervalS
        }
        if (t >= nextSampleS - 1e-9 && sampled.frames.size < AmsWire.MAX_FRAMES_PER_CHUNK) {
            sampled.frames.add(packed(rgb, rowStride))
            sampled.timesS.add(t)
            nextSampleS += 1.0 / sampleFps // on the grid: frame jitter does not drift it
            if (nextSampleS <= t) nextSampleS = t + 1.0 / sampleFps // after a gap
        }
    }

    private fun packed(rgb: ByteBuffer, rowStride: Int): ByteArray {
        val out = ByteArray(height * width * 3)
        val view = rgb.duplicate()
        for (y in 0 until height) {
            view.position(y * rowStride)
            view.get(out, y * width * 3, width * 3)
        }
        return out
    }

    /**
     * While a packet is being applied or waits for its swap, reads the engine's model version
     * after each frame: the frame it moved on is the swap frame (the engine adopts a prepared
     * model between frames). Swaps and applied packets pair up in order; an apply that returns
     * just after the engine already swapped finds its frame waiting.
     */
    private fun noteSwaps(frame: Long) {
        if (synchronized(lock) { !applying && pendingSwaps.isEmpty() }) return
        val version = engineModelVersion()
        val ready = synchronized(lock) {
            repeat((version - engineVersion).toInt().coerceAtLeast(0)) { swapFrames.addLast(frame) }
            engineVersion = version
            val done = ArrayList<AmsUpdate>()
            while (pendingSwaps.isNotEmpty() && swapFrames.isNotEmpty()) {
                done.add(pendingSwaps.removeFirst().copy(swappedFrame = swapFrames.removeFirst()))
            }
            done
        }
        ready.forEach { finish(it) }
    }

    private fun engineModelVersion(): Long =
        (AmsJson.parse(engine.stats()) as? Map<*, *>)?.get("model_version") as? Long
            ?: throw IllegalStateException("the engine's stats carry no model_version")

    // ------------------------------------------------------------------------- network thread
    private fun networkLoop() {
        var backoffMs = config.retryMinMs
        while (stop.count > 0) {
            var permanent = false
            try {
                val connected = open()
                socket = connected
                val link = handshake(connected)
                channel = link
                connections.incrementAndGet()
                synchronized(lock) {
                    state = AmsState.CONNECTED
                    lastLogged = null
                }
                backoffMs = config.retryMinMs
                while (true) { // after close(): reads (and drops) until the server closes
                    val message = link.receive()
                    if (stop.count > 0) dispatch(message)
                }
            } catch (err: AmsProtocolException) {
                permanent = err.code in PERMANENT_CODES
                disconnected(err.code, err.message ?: err.code, permanent)
            } catch (err: java.net.SocketTimeoutException) {
                disconnected("timeout", "no answer from ${config.host}:${config.port} in time")
            } catch (err: javax.net.ssl.SSLException) { // an untrusted or misnamed certificate
                disconnected("tls", "TLS with ${config.host}:${config.port}: ${err.message}")
            } catch (err: IOException) {
                disconnected("connection", "${config.host}:${config.port}: $err")
            } catch (err: RuntimeException) { // a bug here must not end the thread silently
                disconnected("client", "network thread: $err")
            } finally {
                channel = null
                socket?.close()
                socket = null
            }
            if (permanent || stop.count == 0L) return
            stop.await(backoffMs, TimeUnit.MILLISECONDS)
            backoffMs = minOf(2 * backoffMs, config.retryMaxMs)
        }
    }

    private fun open(): Socket {
        val plain = Socket()
        try {
            plain.connect(InetSocketAddress(config.host, config.port), config.connectTimeoutMs)
            plain.soTimeout = config.connectTimeoutMs // the handshake's deadline
            plain.tcpNoDelay = true
            val tls = config.tls ?: return plain
            val secure = tls.createSocket(plain, config.host, config.port, true) as SSLSocket
            secure.sslParameters = secure.sslParameters.apply {
                endpointIdentificationAlgorithm = "HTTPS" // the certificate must name the host
            }
            secure.startHandshake()
            return secure
        } catch (err: IOException) {
            plain.close()
            throw err
        }
    }

    private fun handshake(connected: Socket): AmsChannel {
        val link = AmsChannel(connected, config.maxUpdateBytes)
        link.exchangePreface()
        val nonce = ByteArray(AmsWire.NONCE_BYTES).also { random.nextBytes(it) }
        val hello = synchronized(lock) {
            mapOf("device_id" to config.deviceId.toHex(), "nonce" to nonce.toHex(),
                  "base_sha256" to config.baseSha256, "model_sequence" to modelSequence,
                  "last_sequence" to lastSequence, "time_s" to streamTimeS,
                  "capabilities" to mapOf("codecs" to listOf("jpeg"),
                                          "modes" to listOf("cumulative", "base_relative")))
        }
        link.send(AmsMessage(AmsMessageType.HELLO, hello))
        val challenge = expect(link.receive(), AmsMessageType.CHALLENGE)
        val key = config.key
        var serverNonce = ByteArray(0)
        when {
            challenge.header["auth"] == "none" -> if (key != null) {
                throw AmsProtocolException("auth_failed", "the server offers no authentication " +
                    "and this device has a key: refusing an unauthenticated server")
            }
            key == null -> throw AmsProtocolException(
                "auth_failed", "the server wants authentication and this device has no key")
            else -> {
                serverNonce = challenge.hex("nonce", AmsWire.NONCE_BYTES)
                val proof = AmsWire.deviceProof(key, config.deviceId, nonce, serverNonce)
                link.send(AmsMessage(AmsMessageType.AUTH, mapOf("proof" to proof.toHex())))
            }
        }
        val welcome = expect(link.receive(), AmsMessageType.WELCOME)
        if (key != null) {
            val expected = AmsWire.serverProof(key, config.deviceId, nonce, serverNonce)
            if (!java.security.MessageDigest.isEqual(welcome.hex("server_proof", 32), expected)) {
                throw AmsProtocolException("auth_failed",
                                           "the server does not hold this device's key")
            }
        }
        setRates(welcome)
        heartbeatS = welcome.double("heartbeat_s").also {
            if (!(it > 0 && it < 3600)) throw AmsProtocolException("malformed", "heartbeat_s $it")
        }
        maxChunkBytes = welcome.long("max_chunk_bytes").coerceIn(0, Int.MAX_VALUE.toLong()).toInt()
        connected.soTimeout = (4_000 * heartbeatS).toInt() // the server answers every heartbeat
        log.info("mobdistill: connected to ${config.host}:${config.port}, resume " +
                 "${welcome.header["resume"]}, server at ${welcome.header["server_sequence"]}")
        return link
    }

    private fun expect(message: AmsMessage, type: AmsMessageType): AmsMessage {
        if (message.type == AmsMessageType.ERROR) throw serverError(message)
        if (message.type != type) {
            throw AmsProtocolException("bad_type",
                                       "expected ${type.name}, got ${message.type.name}")
        }
        return message
    }

    private fun serverError(message: AmsMessage) = AmsProtocolException(
        message.header["code"] as? String ?: "server_error",
        "server: ${message.header["message"] ?: "(no message)"}")

    private fun setRates(message: AmsMessage) {
        val fps = message.double("sample_fps")
        val interval = message.double("upload_interval_s")
        if (!(fps > 0 && interval > 0)) {
            throw AmsProtocolException("malformed", "rates must be positive: $fps fps, $interval s")
        }
        sampleFps = fps
        uploadIntervalS = interval
        hibernating = message.header["hibernating"] == true
    }

    private fun dispatch(message: AmsMessage) {
        when (message.type) {
            AmsMessageType.UPDATE -> {
                downlinkBytes.addAndGet(message.body.size.toLong())
                val update = AmsUpdate(message.long("sequence"),
                                       message.header["kind"] as? String ?: "update", "received",
                                       null, framesAnalyzed.get(), null, 0.0)
                if (!packets.offer(update to message.body)) {
                    throw AmsProtocolException("slow", "update packets arrive faster than the " +
                                                       "engine applies them")
                }
            }
            AmsMessageType.RATE -> setRates(message)
            AmsMessageType.ERROR -> throw serverError(message)
            else -> Unit // HEARTBEAT answers keep the read deadline; nothing else to do
        }
    }

    // ------------------------------------------------------------------------- uplink thread
    private fun uplinkLoop() {
        var lastSentNs = System.nanoTime()
        while (stop.count > 0) {
            while (true) {
                val message = control.poll() ?: break
                if (send(message)) lastSentNs = System.nanoTime()
            }
            val chunk = chunks.poll(50, TimeUnit.MILLISECONDS)
            if (chunk != null) {
                upload(chunk)
                lastSentNs = System.nanoTime()
            } else if (System.nanoTime() - lastSentNs > heartbeatS * 1e9) {
                send(AmsMessage(AmsMessageType.HEARTBEAT))
                lastSentNs = System.nanoTime()
            }
        }
        control.forEach { send(it) } // acks of the last frames, then goodbye
        send(AmsMessage(AmsMessageType.BYE))
    }

    private fun upload(chunk: Chunk) {
        val blobs = try {
            chunk.frames.map { config.jpegEncoder.encode(it, width, height) }
        } catch (err: Exception) {
            chunksDropped.incrementAndGet()
            report("encoder", "JPEG encoding failed: $err", permanent = false)
            return
        }
        val size = blobs.sumOf { it.size }
        if (size > maxChunkBytes) {
            chunksDropped.incrementAndGet()
            report("too_large", "a chunk of $size B exceeds the server's $maxChunkBytes B", false)
            return
        }
        val body = ByteArray(size)
        var offset = 0
        blobs.forEach { it.copyInto(body, offset); offset += it.size }
        val header = mapOf("codec" to "jpeg", "times_s" to chunk.timesS,
                           "upload_time_s" to chunk.uploadTimeS,
                           "jpeg_sizes" to blobs.map { it.size })
        if (send(AmsMessage(AmsMessageType.FRAMES, header, body))) {
            chunksUploaded.incrementAndGet()
            framesUploaded.addAndGet(chunk.frames.size.toLong())
            uplinkBytes.addAndGet(size.toLong())
        } else {
            chunksDropped.incrementAndGet()
        }
    }

    /** Sends when connected; false (nothing queued) when not. A failed send drops the link. */
    private fun send(message: AmsMessage): Boolean {
        val link = channel ?: return false
        return try {
            link.send(message)
            true
        } catch (err: IOException) {
            socket?.close() // the network thread sees it and reconnects
            false
        }
    }

    // ------------------------------------------------------------------------- apply thread
    private fun applyLoop() {
        while (stop.count > 0) {
            val (update, packet) = packets.poll(100, TimeUnit.MILLISECONDS) ?: continue
            synchronized(lock) { applying = true }
            val record = try {
                @Suppress("UNCHECKED_CAST")
                AmsJson.parse(engine.applyUpdate(packet)) as Map<String, Any?>
            } catch (err: RuntimeException) { // a closed engine, or a record that is not JSON
                report("engine", "applying update ${update.sequence} failed: $err", false)
                mapOf("status" to "rejected", "reason" to "engine_error")
            }
            val stages = listOf("decode_us", "patch_us", "build_us", "warm_us")
                .sumOf { ((record[it] as? Number)?.toDouble() ?: 0.0).coerceAtLeast(0.0) }
            val status = record["status"] as? String ?: "rejected"
            val handled = update.copy(status = status, reason = record["reason"] as? String,
                                      applyUs = stages)
            if (status == "applied") {
                synchronized(lock) {
                    modelSequence = update.sequence
                    lastSequence = update.sequence
                    pendingSwaps.addLast(handled)
                    applying = false
                }
            } else {
                synchronized(lock) { applying = false }
                finish(handled)
            }
        }
    }

    private fun finish(update: AmsUpdate) {
        val last = synchronized(lock) {
            updates.addLast(update)
            if (updates.size > MAX_UPDATE_RECORDS) updates.removeFirst()
            lastSequence
        }
        val ack = mapOf("sequence" to update.sequence, "status" to update.status,
                        "reason" to update.reason, "apply_us" to update.applyUs,
                        "received_frame" to update.receivedFrame,
                        "swapped_frame" to update.swappedFrame, "last_sequence" to last)
        // A lost ack costs nothing lasting: the next HELLO says where the model is.
        control.offer(AmsMessage(AmsMessageType.ACK, ack))
    }

    /** The link ended; status() sees the error and the state it leaves change together. */
    private fun disconnected(code: String, message: String, permanent: Boolean = false) {
        if (stop.count == 0L) return // closing: the socket was closed on purpose
        report(code, message, permanent, if (permanent) AmsState.FAILED else AmsState.RETRYING)
    }

    private fun report(code: String, message: String, permanent: Boolean,
                       newState: AmsState? = null) {
        val error = AmsError(code, message, permanent)
        val repeated = synchronized(lock) {
            (lastLogged == error).also {
                lastError = error
                lastLogged = error
                if (newState != null) state = newState
            }
        }
        if (!repeated) { // a server that stays down is logged once, not at every retry
            log.log(if (permanent) Level.SEVERE else Level.WARNING,
                    "mobdistill: live link: [$code] $message")
        }
    }

    companion object {
        private val log: Logger = Logger.getLogger("mobdistill")
        private val random = SecureRandom()
        private const val MAX_UPDATE_RECORDS = 64

        /** Retrying cannot fix these: the device's key, id or model do not match the server. */
        val PERMANENT_CODES = setOf("auth_failed", "wrong_model", "bad_preface",
                                    "unsupported_version")

        /** Starts the client's threads; the first connection is attempted at once. */
        @JvmStatic
        fun connect(engine: MobdistillEngine, config: AmsConfig): AmsClient =
            AmsClient(engine, config).also { client -> client.threads.forEach { it.start() } }

        /** The sha256 of the .tflite a manifest deploys (what the server checks in HELLO). */
        @JvmStatic
        fun manifestSha256(manifest: File): String {
            val parsed = AmsJson.parse(manifest.readText()) as? Map<*, *>
            val artifacts = parsed?.get("artifacts") as? List<*>
            val tflite = artifacts?.firstOrNull { (it as? Map<*, *>)?.get("format") == "tflite" }
            return (tflite as? Map<*, *>)?.get("sha256") as? String
                ?: throw IllegalArgumentException("$manifest lists no tflite artifact sha256")
        }

        /** The last sequence an engine state file records (0 when there is none yet). */
        @JvmStatic
        fun stateFileSequence(stateFile: File): Long {
            if (!stateFile.isFile) return 0
            val parsed = AmsJson.parse(stateFile.readText()) as? Map<*, *>
            return parsed?.get("last_sequence") as? Long ?: 0
        }
    }
}
