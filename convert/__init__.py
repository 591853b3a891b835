"""Export of a trained (optionally quantized) generator: TFLite, ONNX, deployment bundles."""
