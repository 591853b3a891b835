"""Post-training quantization of generator weights, the .qmtg payload and the RD report."""
