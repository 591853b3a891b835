"""Per-layer bit widths from measured sensitivities: the smallest SNR loss within a byte budget.

Each layer (its kernel, bias or norm vectors together) is quantized alone at every candidate
width, the others kept float, and the scene's SNR drop is measured; each layer's codes are
entropy coded alone to price it. Drops are taken as additive across layers (the HAWQ-style
assumption), and a greedy walk starts every layer at the widest width and lowers, one step at
a time, the layer that loses the least SNR per byte saved, until the payload fits. The caller
encodes the chosen allocation and checks the real file against the budget.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from qmtgan.quantize.model import quantize_tensors
from qmtgan.quantize.policy import FLOAT_LAYERS, Policy, TensorInfo
from qmtgan.runtime import entropy
from qmtgan.runtime.errors import QmtganError

log = logging.getLogger(__name__)

ALLOCATION_BITS = (2, 3, 4, 5, 6, 8)
# Layers this small (norm vectors, small biases) cost a few bytes at any width: they stay at the
# widest width, and probing them would only cost time.
MIN_ALLOCATED_VALUES = 256


@dataclass(frozen=True)
class LayerOption:
    layer: str
    bits: int
    drop_db: float   # SNR lost when this layer alone is quantized at `bits`
    nbytes: int      # its codes, entropy coded alone, and its side information


def layers_of(tensors: list[tuple[TensorInfo, np.ndarray]]) -> list[str]:
    """The layers worth allocating, in weight order: quantized, and of MIN_ALLOCATED_VALUES or more."""
    sizes: dict[str, int] = {}
    for info, _ in tensors:
        if info.layer not in FLOAT_LAYERS:
            sizes[info.layer] = sizes.get(info.layer, 0) + info.size
    return [layer for layer, size in sizes.items() if size >= MIN_ALLOCATED_VALUES]


def layer_options(tensors, method: str, measure: Callable[[list[np.ndarray]], float],
                  widths: tuple[int, ...] = ALLOCATION_BITS, progress: bool = True) -> list[LayerOption]:
    """Every (layer, width): its measured SNR drop and its coded size. ``measure`` maps the
    generator's weights (in ``tensors`` order) to the scene's SNR in dB."""
    from tqdm import tqdm

    base_weights = [w for _, w in tensors]
    base = measure(base_weights)
    out = []
    jobs = [(layer, bits) for layer in layers_of(tensors) for bits in widths]
    for layer, bits in tqdm(jobs, desc="sensitivities", unit="probe", disable=not progress):
        idx = [i for i, (info, _) in enumerate(tensors) if info.layer == layer]
        qmodel = quantize_tensors([tensors[i] for i in idx], Policy(method, bits=bits))
        weights = list(base_weights)
        for i, w in zip(idx, qmodel.dequantized()):
            weights[i] = w
        drop = base - measure(weights)
        codes = [e.q.codes for e in qmodel.entries]
        nbytes = len(entropy.encode(codes, [bits] * len(codes))[1]) + 4 * qmodel.side_values()
        out.append(LayerOption(layer, bits, max(drop, 0.0), nbytes))
    return out


class _Walk:
    """The greedy walk: every layer at its widest width, then one narrowing step at a time, the
    step that loses the least SNR per byte saved first."""

    def __init__(self, options: list[LayerOption]):
        self.by_layer: dict[str, list[LayerOption]] = {}
        for o in options:
            self.by_layer.setdefault(o.layer, []).append(o)
        for opts in self.by_layer.values():
            opts.sort(key=lambda o: -o.bits)  # widest first
        self.at = {layer: 0 for layer in self.by_layer}

    @property
    def nbytes(self) -> int:
        return sum(opts[self.at[layer]].nbytes for layer, opts in self.by_layer.items())

    @property
    def drop_db(self) -> float:
        return sum(opts[self.at[layer]].drop_db for layer, opts in self.by_layer.items())

    def next_step(self) -> tuple[str, int] | None:
        moves = []
        for layer, opts in self.by_layer.items():
            i = self.at[layer]
            # the next narrower width that saves bytes (coded sizes need not fall at every step)
            for j in range(i + 1, len(opts)):
                saved = opts[i].nbytes - opts[j].nbytes
                if saved > 0:
                    moves.append(((opts[j].drop_db - opts[i].drop_db) / saved, layer, j))
                    break
        return min(moves)[1:] if moves else None

    def allocation(self) -> dict[str, int]:
        return {layer: opts[self.at[layer]].bits for layer, opts in self.by_layer.items()}


def allocate(options: list[LayerOption], budget_bytes: float) -> dict[str, int]:
    """The greedy allocation whose summed layer bytes fit ``budget_bytes``."""
    walk = _Walk(options)
    while walk.nbytes > budget_bytes:
        step = walk.next_step()
        if step is None:
            raise QmtganError(f"no allocation fits {budget_bytes:,.0f} bytes of weights: the narrowest takes "
                              f"{walk.nbytes:,} bytes")
        walk.at[step[0]] = step[1]
    return walk.allocation()


def allocate_within_loss(options: list[LayerOption], max_loss_db: float) -> dict[str, int]:
    """The greedy allocation narrowed as far as the summed drops stay within ``max_loss_db``."""
    walk = _Walk(options)
    while (step := walk.next_step()) is not None:
        before = walk.at[step[0]]
        walk.at[step[0]] = step[1]
        if walk.drop_db > max_loss_db:
            walk.at[step[0]] = before
            break
    return walk.allocation()


def allocation_policy(method: str, allocation: dict[str, int], others: int = max(ALLOCATION_BITS)) -> Policy:
    """The policy of an allocation; layers it does not list (the small ones) at ``others`` bits."""
    return Policy(method, "allocated", bits=others, allocation=tuple(allocation.items()))


def describe(allocation: dict[str, int], options: list[LayerOption]) -> str:
    """One line per layer: its width, its measured drop there and its bytes."""
    found = {(o.layer, o.bits): o for o in options}
    return "\n".join(f"  {layer}: {bits} bits (alone: -{found[layer, bits].drop_db:.3f} dB, "
                     f"{found[layer, bits].nbytes:,} bytes)" for layer, bits in allocation.items())
