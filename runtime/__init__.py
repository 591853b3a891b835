"""Device side: numpy plus one inference backend. Imports nothing from train/quantize/convert,
and nothing heavy at import time (no TensorFlow, ever)."""
