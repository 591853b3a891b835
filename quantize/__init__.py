"""Post-training quantization of generator weights, the .qmtg payload's contents and the PTQ sweep."""
