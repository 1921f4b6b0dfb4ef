package org.mobdistill.harness

import android.Manifest
import android.content.pm.PackageManager
import android.os.Bundle
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import java.io.File
import java.nio.ByteBuffer
import java.util.concurrent.Executors
import org.mobdistill.AmsClient
import org.mobdistill.CameraFrame
import org.mobdistill.Delegate
import org.mobdistill.ImagePlane
import org.mobdistill.MobdistillEngine
import org.mobdistill.android.BitmapJpegEncoder

/**
 * CameraX preview with the live mask overlay. The model is `files/models/<model>.manifest.json`
 * (push it with `mobdistill` or `adb push` + `run-as`); `-e model NAME -e delegate gpu` on
 * `am start` pick another one. With `--es ams_server HOST:PORT` (and the live extras of
 * [LiveRequest]: `update_device_id`, `update_key_file` or `insecure_updates`, ...) the camera
 * frames go through the library's AmsClient to `mobdistill serve`, which streams updates back.
 */
class MainActivity : AppCompatActivity() {
    private val analyzer = Executors.newSingleThreadExecutor()
    private var engine: MobdistillEngine? = null
    private var client: AmsClient? = null

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA)
            == PackageManager.PERMISSION_GRANTED) start() else requestPermissions(arrayOf(Manifest.permission.CAMERA), 1)
    }

    override fun onRequestPermissionsResult(code: Int, permissions: Array<out String>, results: IntArray) {
        super.onRequestPermissionsResult(code, permissions, results)
        if (results.firstOrNull() == PackageManager.PERMISSION_GRANTED) start() else status("camera permission denied")
    }

    private fun start() {
        val model = intent.getStringExtra("model") ?: "mobilevos"
        val delegate = Delegate.parse(intent.getStringExtra("delegate") ?: "xnnpack")
        val manifest = File(filesDir, "models/$model.manifest.json")
        val runtime = File(applicationInfo.nativeLibraryDir, RUNTIME_LIB).path
        val extras = intent.extras?.let { b -> b.keySet().associateWith { b.get(it).toString() } }.orEmpty()
        try {
            if (LiveRequest.isLive(extras)) {
                val request = LiveRequest.fromExtras(extras, filesDir.path, runtime, camera = true)
                val (live, config) = openLive(request, BitmapJpegEncoder())
                engine = live
                client = AmsClient.connect(live, config)
            } else {
                engine = MobdistillEngine.open(manifest.path, runtime, delegate, numThreads = 4)
            }
        } catch (err: Exception) {
            status("cannot start: ${err.message}")
            return
        }
        val providerFuture = ProcessCameraProvider.getInstance(this)
        providerFuture.addListener({ bind(providerFuture.get()) }, ContextCompat.getMainExecutor(this))
    }

    private fun bind(provider: ProcessCameraProvider) {
        val preview = Preview.Builder().build().also {
            it.surfaceProvider = findViewById<PreviewView>(R.id.preview).surfaceProvider
        }
        // YUV_420_888 (CameraX's default): the engine converts, rotates and resizes natively.
        val analysis = ImageAnalysis.Builder()
            .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)  // drop, never queue
            .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_YUV_420_888)
            .build()
        analysis.setAnalyzer(analyzer) { image -> image.use { analyze(it) } }
        provider.unbindAll()
        provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, analysis)
    }

    private fun analyze(image: ImageProxy) {
        val engine = engine ?: return
        val (h, w) = engine.info.height to engine.info.width
        // The sensor's buffer as it is; rotationDegrees turns it upright inside the engine.
        val frame = CameraFrame(image.format, image.width, image.height,
                                image.imageInfo.rotationDegrees,
                                image.planes.map { ImagePlane(it.buffer, it.rowStride, it.pixelStride) })
        val mask = ByteBuffer.allocateDirect(w * h)
        val live = client
        val invokeUs = if (live != null) {
            live.analyze(frame, mask, image.imageInfo.timestamp)
        } else {
            engine.segment(frame, mask).invokeUs
        }
        // The overlay covers the upright frame; map the model-sized mask onto it.
        val (pw, ph) = frame.uprightWidth to frame.uprightHeight
        val preview = ByteBuffer.allocateDirect(pw * ph)
        MobdistillEngine.maskToPreview(mask, w, h, preview, pw, ph)
        val ids = ByteArray(pw * ph).also { preview.get(it) }
        runOnUiThread {
            findViewById<MaskOverlayView>(R.id.overlay).show(ids, pw, ph)
            val link = live?.status()?.let { "  ${it.state} model ${it.modelSequence}" } ?: ""
            status("${engine.delegateUsed}  invoke ${invokeUs / 1000.0} ms$link")
        }
    }

    private fun status(text: String) {
        findViewById<TextView>(R.id.status).text = text
    }

    override fun onDestroy() {
        analyzer.execute { client?.close(); engine?.close() }  // after the last analyze() there
        analyzer.shutdown()
        super.onDestroy()
    }
}
