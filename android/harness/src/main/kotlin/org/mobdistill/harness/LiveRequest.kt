package org.mobdistill.harness

import org.mobdistill.Delegate

/**
 * The harness's live mode: extras with `ams_server` (HOST:PORT of `mobdistill serve`) attach the
 * library's AmsClient to the app's frame loop instead of running the benchmark. Pure JVM
 * (host-checked by hostcheck/BenchmarkRequestCheck.kt with a `live` first argument).
 *
 * The other extras are the engine's own flags, as for the benchmark ([BenchmarkRequest]), where
 * the live loop has a use for them: `manifest` (or `model`/`queue`), `frames` (packed RGB at the
 * model's size, played once in order; required), `num_runs` (at most this many frames),
 * `run_delay` (seconds between frames; default 1/30), `num_threads`, `use_xnnpack`/`use_gpu`/
 * `use_nnapi`, `update_device_id` (required), `update_key_file` or `insecure_updates=true`,
 * `update_state_file`; and `ams_tls=true` (TLS with the platform's trust store) and `tag`.
 * MainActivity takes the same extras (without `frames`) to run AmsClient on the camera.
 * Any other extra is refused, so a flag the live loop would ignore is never silently dropped.
 * Outputs: `files/<tag>.live.jsonl` (one line per frame), `files/<tag>.masks` (uint8 class ids,
 * H x W per frame) and `files/<tag>.live.json` (the client's status at the end), or
 * `files/<tag>.live.json.error`.
 */
data class LiveRequest(
    val host: String,
    val port: Int,
    val tls: Boolean,
    val manifest: String,
    val runtimeLib: String,
    val frames: String?, // null: the camera (MainActivity)
    val maxFrames: Int?,
    val frameIntervalS: Double,
    val numThreads: Int,
    val delegate: Delegate,
    val deviceId: ByteArray,
    val keyFile: String?,
    val insecure: Boolean,
    val stateFile: String?,
    val jsonl: String,
    val masks: String,
    val summary: String,
) {
    companion object {
        const val SERVER = "ams_server"
        private val ACCEPTED = setOf(
            SERVER, "ams_tls", "tag", "manifest", "model", "queue", "frames", "num_runs",
            "run_delay", "num_threads", "use_xnnpack", "use_gpu", "use_nnapi", "update_device_id",
            "update_key_file", "insecure_updates", "update_state_file",
        )
        private val HOST_PORT = Regex("(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9.-]+):(\\d{1,5})")
        private val HEX_ID = Regex("[0-9a-fA-F]{32}")

        fun isLive(extras: Map<String, String>): Boolean = SERVER in extras

        /** [camera]: MainActivity's camera feeds the frames, so `frames` is not needed. */
        fun fromExtras(
            extras: Map<String, String>, filesDir: String, runtimeLib: String, camera: Boolean = false,
        ): LiveRequest {
            val unknown = extras.keys - ACCEPTED
            require(unknown.isEmpty()) {
                "extra '${unknown.sorted().first()}' does not apply to the live mode ($SERVER); " +
                    "it takes ${ACCEPTED.sorted().joinToString(", ")}"
            }
            val server = HOST_PORT.matchEntire(extras.getValue(SERVER))
                ?: throw IllegalArgumentException("extra '$SERVER' must be HOST:PORT, not '${extras[SERVER]}'")
            val port = server.groupValues[2].toInt()
            require(port in 1..65535) { "extra '$SERVER': $port is not a TCP port" }
            val tag = extras["tag"] ?: "live"
            require(BenchmarkRequest.isPlainTag(tag)) { "extra 'tag' must be a plain file name, not '$tag'" }
            val frames = extras["frames"]
            require(camera || frames != null) {
                "the live mode plays 'frames' (packed RGB at the model's size); the camera's live mode " +
                    "is the main activity"
            }
            val deviceId = extras["update_device_id"]?.takeIf { HEX_ID.matches(it) }
                ?: throw IllegalArgumentException("extra 'update_device_id' must be the 32 hex digits " +
                                                  "`mobdistill serve --enroll` printed")
            val insecure = flag(extras, "insecure_updates")
            val keyFile = extras["update_key_file"]
            require(insecure != (keyFile != null)) {
                "give 'update_key_file' (the enrolled device's key) or 'insecure_updates=true', one of them"
            }
            val maxFrames = extras["num_runs"]?.let { positive(it, "num_runs") }
            val interval = extras["run_delay"]?.let {
                it.toDoubleOrNull()?.takeIf { s -> s >= 0 }
                    ?: throw IllegalArgumentException("extra 'run_delay' must be seconds >= 0, not '$it'")
            } ?: (1.0 / 30)
            val delegates = listOf("use_gpu" to Delegate.GPU, "use_nnapi" to Delegate.NNAPI,
                                   "use_xnnpack" to Delegate.XNNPACK).filter { flag(extras, it.first) }
            require(delegates.size <= 1) { "at most one of use_xnnpack, use_gpu, use_nnapi may be true" }
            val delegate = delegates.firstOrNull()?.second
                ?: if (extras["use_xnnpack"] == "false") Delegate.CPU else Delegate.XNNPACK
            return LiveRequest(
                host = server.groupValues[1].removePrefix("[").removeSuffix("]"),
                port = port,
                tls = flag(extras, "ams_tls"),
                manifest = extras["manifest"] ?: modelManifest(extras, filesDir),
                runtimeLib = runtimeLib,
                frames = frames,
                maxFrames = maxFrames,
                frameIntervalS = interval,
                numThreads = extras["num_threads"]?.let { positive(it, "num_threads") } ?: 1,
                delegate = delegate,
                deviceId = ByteArray(16) { deviceId.substring(2 * it, 2 * it + 2).toInt(16).toByte() },
                keyFile = keyFile,
                insecure = insecure,
                stateFile = extras["update_state_file"],
                jsonl = "$filesDir/$tag.live.jsonl",
                masks = "$filesDir/$tag.masks",
                summary = "$filesDir/$tag.live.json",
            )
        }

        private fun flag(extras: Map<String, String>, name: String): Boolean = when (extras[name]) {
            null, "false", "0" -> false
            "true", "1" -> true
            else -> throw IllegalArgumentException("extra '$name' must be true or false, not '${extras[name]}'")
        }

        private fun positive(text: String, name: String): Int =
            text.toIntOrNull()?.takeIf { it >= 1 }
                ?: throw IllegalArgumentException("extra '$name' must be a whole number >= 1, not '$text'")

        private fun modelManifest(extras: Map<String, String>, filesDir: String): String {
            val queue = extras["queue"]?.let {
                it.toIntOrNull() ?: throw IllegalArgumentException("extra 'queue' must be an integer, not '$it'")
            }
            val suffix = if (queue != null) "_q$queue" else ""
            return "$filesDir/models/${extras["model"] ?: "mobilevos"}$suffix.manifest.json"
        }
    }

    /** One line per field, for the host check to compare with what the tooling meant. */
    fun describe(): List<String> = listOf(
        "server=$host:$port tls=$tls", "manifest=$manifest", "runtime_lib=$runtimeLib",
        "frames=$frames max_frames=${maxFrames ?: "all"} interval_s=$frameIntervalS",
        "threads=$numThreads delegate=${delegate.flag}",
        "device_id=${deviceId.joinToString("") { "%02x".format(it) }}",
        "key_file=${keyFile ?: "none"} insecure=$insecure state_file=${stateFile ?: "none"}",
        "outputs=$jsonl $masks $summary",
    )
}
