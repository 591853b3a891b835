"""qmtgan: learned multitemporal multispectral image compression, from training to the edge.

The pipeline stages are the subpackages ``qmtgan.train``, ``qmtgan.quantize``,
``qmtgan.convert``, ``qmtgan.runtime``, ``qmtgan.targets`` and ``qmtgan.bench``.
This root package holds only the version and the CLI dispatcher.
"""

__version__ = "0.1.0"
