"""The demo's fixed configuration: its pairs, the generator it fits to each, its training
schedule and the rates and bit widths of its rate-distortion comparison."""

from __future__ import annotations

# The demo's short schedule over the 16 patches of the sample scene; the README's results give
# what it reaches and how long it takes.
DEMO_EPOCHS = 40
DEMO_VAL_EVERY = 10
# The demo's pairs: the demo pair and two of other character (train/simulate.py PRESETS),
# each with its own documented seed.
DEMO_PAIRS = (("pair", "default", 0), ("pair-seasonal", "seasonal", 1), ("pair-change", "change", 2))
# The generator the demo fits to every pair, the best measured per bit (see the README's
# results): a narrow MultiTempGAN whose output is a change added to a 3x3 linear map of the
# reference (fitted by robust least squares, then kept), trained on the squared error (what
# SNR measures) with a decaying rate.
DEMO_GENERATOR = {"ngf": 4, "residual": "linear", "spectral_kernel": 3}
DEMO_TRAIN = {"loss": "l2", "adversarial": False, "learning_rate": 1e-3, "decay_from": 0.5, "norm_clip": 0.0}
DEMO_RATES = (0.02, 0.05, 0.11, 0.15)
DEMO_BITS = (4, 8)
