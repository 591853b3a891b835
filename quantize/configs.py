"""The configurations of the paper's Table 2 and of the full sweep."""

from __future__ import annotations

from qmtgan.quantize.methods import FLOAT_BITS, METHODS
from qmtgan.quantize.policy import Policy

SWEEP_BITS = (2, 4, 6, 8, 16, 32)
# The paper's Table 2 LWPQ row (2.45 MB, 0.0149 bpp, ratio 3.97) pins its critical layers:
# 16 bits on exactly conv1 + deconv5 (18,000 kernel parameters) is the only choice of whole
# conv layers that gives all three numbers.
PAPER_CRITICAL = ("conv1", "deconv5")


def table2_policies(critical: tuple[str, ...] = PAPER_CRITICAL) -> list[tuple[str, Policy]]:
    """(row name, policy) of every quantized row of the paper's Table 2, float first."""
    return [
        ("MultiTempGAN", Policy(bits=FLOAT_BITS)),
        ("Q-MultiTempGAN Stoch", Policy("stochastic", bits=6)),
        ("Q-MultiTempGAN Stoch", Policy("stochastic", bits=8)),
        ("Q-MultiTempGAN Symm", Policy("symmetric", bits=6)),
        ("Q-MultiTempGAN Symm", Policy("symmetric", bits=8)),
        ("Q-MultiTempGAN Conv", Policy("symmetric", "conv-only", bits=6)),
        ("Q-MultiTempGAN Conv", Policy("symmetric", "conv-only", bits=8)),
        ("Q-MultiTempGAN LWPQ", Policy("symmetric", "lwpq", conv_bits=8, nonconv_bits=6,
                                       critical_bits=16, critical=critical)),
    ]


def sweep_policies(methods: list[str], bits: list[int], critical: tuple[str, ...]) -> list[Policy]:
    """Every method x bit width, the mixed modes at every width, split 8/6 and LWPQ 16/8/6."""
    out = [Policy(bits=FLOAT_BITS)]
    for m in methods:
        out += [Policy(m, bits=b) for b in bits if b != FLOAT_BITS]
    for mode in ("conv-only", "nonconv-only"):
        out += [Policy("symmetric", mode, bits=b) for b in bits if b != FLOAT_BITS]
    out.append(Policy("symmetric", "split", conv_bits=8, nonconv_bits=6))
    out.append(Policy("symmetric", "lwpq", conv_bits=8, nonconv_bits=6, critical_bits=16, critical=critical))
    return out


ALL_METHODS = list(METHODS)
