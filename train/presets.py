"""Named generator and training presets: the narrow generator the demo and `qmtgan real` fit to
every pair, and the benchmarks measure."""

from __future__ import annotations

# A narrow MultiTempGAN whose output is a change added to a 3x3 linear map of the reference
# (fitted by robust least squares, then kept), the best measured per bit (see the README's results).
DEMO_GENERATOR = {"ngf": 4, "residual": "linear", "spectral_kernel": 3}
# Trained on the squared error (what SNR measures) with a decaying rate, no adversary.
DEMO_TRAIN = {"loss": "l2", "adversarial": False, "learning_rate": 1e-3, "decay_from": 0.5, "norm_clip": 0.0}
