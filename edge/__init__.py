"""On-device formats: TFLite, ExecuTorch and ONNX files from the same weights, with their measurements."""
