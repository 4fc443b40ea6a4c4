"""On-device formats: TFLite (and, later, ExecuTorch and ONNX) with their measurements."""
