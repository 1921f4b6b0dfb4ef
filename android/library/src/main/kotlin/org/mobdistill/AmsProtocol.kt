package org.mobdistill

import java.io.BufferedInputStream
import java.io.BufferedOutputStream
import java.io.DataInputStream
import java.io.DataOutputStream
import java.io.EOFException
import java.io.IOException
import java.net.Socket
import javax.crypto.Mac
import javax.crypto.spec.SecretKeySpec

/**
 * The live device protocol v1 (docs/protocol.md; the reference is contract/protocol.py): a
 * preface, then frames `u32 length | u8 type | u32 header_length | JSON header | body`,
 * big-endian, every size checked before anything is allocated.
 */
enum class AmsMessageType(val code: Int) {
    HELLO(1), CHALLENGE(2), AUTH(3), WELCOME(4), FRAMES(5), RATE(6), UPDATE(7), ACK(8),
    HEARTBEAT(9), ERROR(10), BYE(11);

    companion object {
        fun of(code: Int): AmsMessageType? = entries.firstOrNull { it.code == code }
    }
}

/**
 * The connection failed in a way the app may want to show: [code] is the protocol's error code
 * (`auth_failed`, `wrong_model`, `malformed`, `too_large`, `closed`, `timeout`, ...), or the
 * code of the server's ERROR frame.
 */
class AmsProtocolException(val code: String, message: String) : IOException(message)

class AmsMessage(
    val type: AmsMessageType,
    val header: Map<String, Any?> = emptyMap(),
    val body: ByteArray = ByteArray(0),
) {
    fun long(name: String): Long = header[name] as? Long ?: malformed(name, "an integer")

    fun double(name: String): Double = (header[name] as? Number)?.toDouble()
        ?: malformed(name, "a number")

    fun string(name: String): String = header[name] as? String ?: malformed(name, "a string")

    /** A hex field of exactly [size] bytes. */
    fun hex(name: String, size: Int): ByteArray {
        val text = string(name)
        if (text.length != 2 * size || text.any { Character.digit(it, 16) < 0 }) {
            malformed(name, "$size bytes of hex")
        }
        return ByteArray(size) { text.substring(2 * it, 2 * it + 2).toInt(16).toByte() }
    }

    private fun malformed(name: String, what: String): Nothing =
        throw AmsProtocolException("malformed", "${type.name}: header field '$name' is not $what")
}

internal object AmsWire {
    const val VERSION = 1
    val PREFACE = byteArrayOf('M'.code.toByte(), 'D'.code.toByte(), 'L'.code.toByte(),
                              'V'.code.toByte(), 0, VERSION.toByte())
    const val HEAD_AFTER_LENGTH = 5 // type + header length
    const val MAX_HEADER_BYTES = 64 * 1024
    const val MAX_FRAMES_PER_CHUNK = 512
    const val DEFAULT_MAX_CHUNK_BYTES = 8 * 1024 * 1024
    const val NONCE_BYTES = 16
    val SERVER_TYPES = setOf(AmsMessageType.CHALLENGE, AmsMessageType.WELCOME,
                             AmsMessageType.RATE, AmsMessageType.UPDATE,
                             AmsMessageType.HEARTBEAT, AmsMessageType.ERROR)
    private val DEVICE_LABEL = "mobdistill-live/1 device".toByteArray()
    private val SERVER_LABEL = "mobdistill-live/1 server".toByteArray()

    fun deviceProof(key: ByteArray, deviceId: ByteArray, deviceNonce: ByteArray,
                    serverNonce: ByteArray): ByteArray =
        hmac(key, DEVICE_LABEL, deviceId, deviceNonce, serverNonce)

    fun serverProof(key: ByteArray, deviceId: ByteArray, deviceNonce: ByteArray,
                    serverNonce: ByteArray): ByteArray =
        hmac(key, SERVER_LABEL, deviceId, serverNonce, deviceNonce)

    private fun hmac(key: ByteArray, vararg parts: ByteArray): ByteArray =
        Mac.getInstance("HmacSHA256").run {
            init(SecretKeySpec(key, "HmacSHA256"))
            parts.forEach { update(it) }
            doFinal()
        }
}

internal fun ByteArray.toHex(): String = joinToString("") { "%02x".format(it) }

/**
 * Frames over one connected socket. [receive] is called from one thread, [send] from any
 * (serialized here). Reads time out with the socket's SO_TIMEOUT.
 */
internal class AmsChannel(socket: Socket, private val maxUpdateBytes: Int) {
    private val input = DataInputStream(BufferedInputStream(socket.getInputStream()))
    private val output = DataOutputStream(BufferedOutputStream(socket.getOutputStream()))

    fun exchangePreface() {
        synchronized(output) {
            output.write(AmsWire.PREFACE)
            output.flush()
        }
        val preface = ByteArray(AmsWire.PREFACE.size)
        readFully(preface)
        if (!preface.copyOf(4).contentEquals(AmsWire.PREFACE.copyOf(4))) {
            throw AmsProtocolException("bad_preface", "not a mobdistill live server (bad preface)")
        }
        val version = ((preface[4].toInt() and 0xff) shl 8) or (preface[5].toInt() and 0xff)
        if (version != AmsWire.VERSION) {
            throw AmsProtocolException(
                "unsupported_version",
                "the server speaks protocol $version, this client ${AmsWire.VERSION}")
        }
    }

    fun receive(): AmsMessage {
        val length = readU32()
        val code = readByte()
        val headerLength = readU32()
        val type = AmsMessageType.of(code)
            ?: throw AmsProtocolException("bad_type", "unknown message type $code")
        if (type !in AmsWire.SERVER_TYPES) {
            throw AmsProtocolException("bad_type", "${type.name} is not sent by a server")
        }
        val maxBody = if (type == AmsMessageType.UPDATE) maxUpdateBytes.toLong() else 0L
        val limit = AmsWire.HEAD_AFTER_LENGTH + AmsWire.MAX_HEADER_BYTES + maxBody
        if (length > limit) {
            throw AmsProtocolException("too_large",
                                       "${type.name} of $length B exceeds its limit $limit B")
        }
        val bodyLength = length - AmsWire.HEAD_AFTER_LENGTH - headerLength
        if (headerLength > AmsWire.MAX_HEADER_BYTES || bodyLength < 0) {
            throw AmsProtocolException(
                "malformed",
                "${type.name}: header length $headerLength does not fit the frame of $length B")
        }
        val headerBytes = ByteArray(headerLength.toInt()).also { readFully(it) }
        val body = ByteArray(bodyLength.toInt()).also { readFully(it) }
        return AmsMessage(type, parseHeader(type, headerBytes), body)
    }

    fun send(message: AmsMessage) {
        val header = AmsJson.write(message.header).toByteArray(Charsets.UTF_8)
        require(header.size <= AmsWire.MAX_HEADER_BYTES) {
            "${message.type.name} header of ${header.size} B exceeds ${AmsWire.MAX_HEADER_BYTES} B"
        }
        synchronized(output) {
            output.writeInt(AmsWire.HEAD_AFTER_LENGTH + header.size + message.body.size)
            output.writeByte(message.type.code)
            output.writeInt(header.size)
            output.write(header)
            output.write(message.body)
            output.flush()
        }
    }

    private fun parseHeader(type: AmsMessageType, bytes: ByteArray): Map<String, Any?> {
        if (bytes.isEmpty()) return emptyMap()
        val decoder = Charsets.UTF_8.newDecoder()
        val parsed = try {
            AmsJson.parse(decoder.decode(java.nio.ByteBuffer.wrap(bytes)).toString())
        } catch (err: IllegalArgumentException) {
            throw AmsProtocolException("malformed",
                                       "${type.name}: header is not JSON (${err.message})")
        } catch (err: java.nio.charset.CharacterCodingException) {
            throw AmsProtocolException("malformed", "${type.name}: header is not UTF-8")
        }
        @Suppress("UNCHECKED_CAST")
        return parsed as? Map<String, Any?>
            ?: throw AmsProtocolException("malformed", "${type.name}: header must be a JSON object")
    }

    private fun readU32(): Long = guard { input.readInt().toLong() and 0xffffffffL }

    private fun readByte(): Int = guard { input.readUnsignedByte() }

    private fun readFully(into: ByteArray) = guard { input.readFully(into) }

    private inline fun <T> guard(read: () -> T): T = try {
        read()
    } catch (err: EOFException) {
        throw AmsProtocolException("closed", "the server closed the connection")
    }
}
