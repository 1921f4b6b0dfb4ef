// Run by tests/live/test_kotlin_client.py on a desktop JVM: the library's AmsClient over TLS
// against the REAL `mobdistill serve --tls-cert ... --tls-key ...` process (a self-signed
// certificate made by openssl for 127.0.0.1), through the real engine via JNI. A client that
// trusts that certificate uploads frames and applies the server's packets; one with the JVM's
// default trust and one without TLS get nowhere, report it in status() and keep segmenting on
// the base model. Args: work dir (frames.rgb), manifest, runtime library, server port, device
// id (hex), key file, the server's certificate (PEM). Writes ams_client_tls.json.
import java.io.File
import java.security.KeyStore
import java.security.cert.CertificateFactory
import javax.net.ssl.SSLContext
import javax.net.ssl.SSLSocketFactory
import javax.net.ssl.TrustManagerFactory
import org.mobdistill.AmsClient
import org.mobdistill.AmsState
import org.mobdistill.MobdistillEngine

private object AmsClientTlsChecks {
    const val DEADLINE_MS = 60_000L // only a failing run waits this long

    /** TLS that trusts exactly [pem] (certificate pinning, as a phone app would ship it). */
    fun trusting(pem: File): SSLSocketFactory {
        val cert = pem.inputStream().use {
            CertificateFactory.getInstance("X.509").generateCertificate(it)
        }
        val store = KeyStore.getInstance(KeyStore.getDefaultType()).apply {
            load(null, null)
            setCertificateEntry("server", cert)
        }
        val trust = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm())
            .apply { init(store) }
        return SSLContext.getInstance("TLS").apply { init(null, trust.trustManagers, null) }
            .socketFactory
    }

    fun secure(target: AmsClientChecks.Target, tls: SSLSocketFactory,
               engine: MobdistillEngine, reference: MobdistillEngine,
               clip: AmsClientChecks.Clip, out: File) {
        val client = AmsClient.connect(engine, AmsClientChecks.config(target, tls = tls))
        var swappedAt = Int.MAX_VALUE
        val differs = AmsClientChecks.play(client, reference, clip, paced = true,
                                           DEADLINE_MS) { s, k ->
            val swaps = s.updates.mapNotNull { it.swappedFrame }
            swaps.firstOrNull()?.let { swappedAt = minOf(swappedAt, it.toInt()) }
            swaps.isNotEmpty() && k > swaps.max() + 15
        }
        client.close(drainMs = 30_000)
        val s = client.status()
        AmsClientChecks.ok(s.state == AmsState.CLOSED && s.connections == 1L &&
                               s.lastError == null, "over TLS: one connection, closed cleanly")
        AmsClientChecks.ok(s.framesUploaded > 0 && s.uplinkBytes > 0,
                           "frames went up over TLS: ${s.framesUploaded} frames")
        val applied = s.updates.filter { it.status == "applied" }
        AmsClientChecks.ok(applied.isNotEmpty() && s.updates.all { it.status == "applied" },
                           "packets applied: " + applied.joinToString { "#${it.sequence}" })
        AmsClientChecks.ok(engine.stats().contains("\"model_version\":${applied.last().sequence}"),
                           "the engine runs the last packet's model")
        AmsClientChecks.ok(differs.take(swappedAt).none { it } &&
                               differs.drop(swappedAt).any { it },
                           "masks are the base model's until the swap (frame $swappedAt), " +
                               "then change")
        val rows = applied.joinToString(",") {
            "{\"sequence\":${it.sequence},\"swapped_frame\":${it.swappedFrame}}"
        }
        File(out, "ams_client_tls.json").writeText(
            "{\"updates\":[$rows],\"frames_uploaded\":${s.framesUploaded}}\n")
    }

    /** A client that cannot set up the secure link: an error in status(), nothing sent. */
    fun refused(what: String, target: AmsClientChecks.Target, tls: SSLSocketFactory?,
                expected: Set<String>, engine: MobdistillEngine, reference: MobdistillEngine,
                clip: AmsClientChecks.Clip) {
        AmsClient.connect(engine, AmsClientChecks.config(target, retryMinMs = 50, tls = tls))
            .use { client ->
                val s = AmsClientChecks.waitFor(client, reference, clip, what) {
                    it.lastError != null && it.framesAnalyzed >= 30
                }
                val error = s.lastError!!
                AmsClientChecks.ok(error.code in expected && s.connections == 0L &&
                                       s.framesUploaded == 0L && s.uplinkBytes == 0L,
                                   "$what: nothing sent, [${error.code}] ${error.message}")
            }
    }

    fun run(args: Array<String>) {
        val dir = File(args[0])
        val manifest = args[1]
        val runtime = args[2]
        val deviceId = args[4].chunked(2).map { it.toInt(16).toByte() }.toByteArray()
        val target = AmsClientChecks.Target("127.0.0.1", args[3].toInt(), deviceId,
                                            File(args[5]).readBytes(),
                                            AmsClient.manifestSha256(File(manifest)))
        val pinned = trusting(File(args[6]))
        MobdistillEngine.open(manifest, runtime).use { reference ->
            val clip = AmsClientChecks.Clip(File(dir, "frames.rgb").readBytes(),
                                            reference.info.height, reference.info.width)
            MobdistillEngine.open(manifest, runtime, updateKey = target.key,
                                  deviceId = deviceId).use { engine ->
                secure(target, pinned, engine, reference, clip, dir)
            }
            MobdistillEngine.open(manifest, runtime, updateKey = target.key,
                                  deviceId = deviceId).use { engine ->
                refused("the JVM's default trust (the self-signed certificate is unknown)",
                        target, SSLSocketFactory.getDefault() as SSLSocketFactory, setOf("tls"),
                        engine, reference, clip)
                // The server expects a TLS hello, gets the preface and closes the connection.
                refused("plain TCP to a TLS server", target, null,
                        setOf("closed", "connection", "timeout"), engine, reference, clip)
                AmsClientChecks.ok(engine.stats().contains("\"received\":0"),
                                   "nothing reached the engine without the secure link")
            }
        }
        println("AmsClient TLS check passed")
    }
}

fun main(args: Array<String>) = AmsClientTlsChecks.run(args)
