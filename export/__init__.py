"""PyTorch -> TFLite / ONNX export, verification and the manifest."""
