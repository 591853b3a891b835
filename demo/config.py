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
# The generator the demo fits to every pair and how it is trained: train/presets.py.
DEMO_RATES = (0.02, 0.05, 0.11, 0.15)
DEMO_BITS = (4, 8)
