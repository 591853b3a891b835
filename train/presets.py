"""Named generator and training presets: the narrow generator the demo and `qmtgan real` fit to
every pair, and the benchmarks measure; how it is trained on simulated and on real pairs."""

from __future__ import annotations

# A narrow MultiTempGAN whose output is a change added to a 3x3 linear map of the reference
# (fitted by robust least squares, then kept), the best measured per bit (see the README's results).
DEMO_GENERATOR = {"ngf": 4, "residual": "linear", "spectral_kernel": 3}
# Trained on the squared error (what SNR measures) with a decaying rate, no adversary.
DEMO_TRAIN = {"loss": "l2", "adversarial": False, "learning_rate": 1e-3, "decay_from": 0.5, "norm_clip": 0.0}
# Real scenes hold saturated pixels far outside their content (a few reach 28,000 DN in one OSCD
# city, where 99.9 % lie under 5,100): a full-range normalization leaves the content
# a sliver of [-1, 1], which costs the float generator accuracy and its int8 twin most of its
# steps. Clipping 0.1 % of each band's values at either end keeps both (README, real pairs).
REAL_TRAIN = {**DEMO_TRAIN, "norm_clip": 0.1}
