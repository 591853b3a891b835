"""Payloads against a shared generator: export a trained shared generator as the float .qmtg
both ends hold, and encode a pair against it.

A pair's payload is its linear base (12-bit taps, float32 offsets), its normalization, a per-block
gate and, in hybrid mode, the coded residual; a gate that keeps the base everywhere leaves the
base alone (a linear-base payload, decoded without the shared model). The gate is chosen by
measured error after the residual: the residual of the base and of the refinement are each coded
at the requested rate, and each block takes the prediction whose reconstruction is closer to the
target there. For each of a few block sizes the gated prediction's own residual is then coded,
and the encoder keeps whichever of these and the plain base (an all-zero gate) measures best, so
the codec never does worse than its base by more than the gate's few bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmtgan import __version__
from qmtgan.quantize.codec import scene_header, to_payload
from qmtgan.quantize.model import quantize_tensors
from qmtgan.quantize.policy import Policy, generator_tensors
from qmtgan.rd.points import PairData
from qmtgan.runtime import gate as gates
from qmtgan.runtime import payload as fmt
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.metrics import snr_db
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.scene import BAND_ORDER
from qmtgan.runtime.linear_coding import METHOD, CodedLinear
from qmtgan.runtime.shared import BIAS_TENSOR, KERNEL_TENSOR, LINEAR_BASE, PREDICTOR, SharedModel
from qmtgan.train.shared import BASE_KERNEL, base_normalization, linear_base

log = logging.getLogger(__name__)

# Gate blocks the encoder tries: 32 px keeps the map near 0.001 bits per sample on a 12-band
# scene; 64 px costs a quarter of that and votes over more pixels where the refinement's gain
# is thin. The first is also the grid of the gate without a residual.
GATE_BLOCKS = (32, 64)


def export_shared(run_dir: Path, out: Path) -> dict:
    """The float .qmtg of a shared generator's run (what `--shared` takes on both ends)."""
    from qmtgan.train.model_io import load_model

    generator, cfg, norm, meta = load_model(run_dir)
    if "shared" not in meta:
        raise QmtganError(f"{run_dir}: not a shared generator's run (train one with `qmtgan shared train`)")
    qmodel = quantize_tensors(generator_tensors(generator), Policy("symmetric", bits=32))
    payload = to_payload(qmodel, cfg.to_dict(), norm, None)
    payload.header["shared"] = meta["shared"]
    fmt.write(out, payload)
    return {"file": str(out), "bytes": out.stat().st_size, "trained_on": meta["shared"]["pairs"]}


def shared_payload(pair: PairData, shared: SharedModel, coded: CodedLinear, norm: Normalization,
                   gate: np.ndarray, block: int) -> fmt.Payload:
    """A pair's payload against ``shared`` (no residual yet). The generator's record stays in
    the shared model, which ``model_sha256`` pins. With an all-base gate it is a linear-base
    payload: the refinement's normalization, gate and model hash would be bytes no decoder uses."""
    header = {"format": "qmtg", "qmtgan_version": __version__, "bands": list(BAND_ORDER), "method": "float32",
              "scene": scene_header(pair.reference, shared.tile),
              "predictor": {"kind": LINEAR_BASE, "base_kernel": BASE_KERNEL}}
    if gate.any():
        header["normalization"] = norm.to_dict()
        header["predictor"] = {"kind": PREDICTOR, "model_sha256": shared.sha256, "base_kernel": BASE_KERNEL,
                               "gate": gates.to_record(gate, block)}
    header["tensors"] = [{"name": KERNEL_TENSOR, "shape": list(coded.codes.shape), "bits": coded.bits,
                          "method": METHOD, "channel_axis": 0, "side": int(coded.steps.size)},
                         {"name": BIAS_TENSOR, "shape": list(coded.bias.shape), "bits": fmt.FLOAT_BITS}]
    return fmt.Payload(header, [coded.codes, None], [coded.steps, None], [None, coded.bias])


@dataclass
class SharedEncoding:
    payload: fmt.Payload
    recon: np.ndarray
    gate_fraction: float     # blocks on the generator's refinement
    base_snr_db: float       # the plain base at the same rate, for the record
    refined_snr_db: float    # the refinement everywhere, no residual


class SharedEncoder:
    """One pair against one shared generator: the base and its refinement, computed once."""

    def __init__(self, pair: PairData, shared: SharedModel, blocks: tuple[int, ...] = GATE_BLOCKS):
        if not blocks:
            raise QmtganError("the shared encoder needs at least one gate block size")
        self.pair, self.shared, self.blocks, self.block = pair, shared, tuple(blocks), blocks[0]
        self.coded, self.base = linear_base(pair.reference, pair.target)
        self.norm = base_normalization(self.base, pair.target.data, pair.valid)
        self.refined = shared.refine(self.base, self.norm, pair.valid)
        self.grid = gates.block_grid(pair.valid.shape, self.block)

    def _payload(self, gate: np.ndarray, block: int) -> fmt.Payload:
        return shared_payload(self.pair, self.shared, self.coded, self.norm, gate, block)

    def _gate(self, base_recon: np.ndarray, refined_recon: np.ndarray, block: int) -> np.ndarray:
        t, v = self.pair.target.data, self.pair.valid
        return gates.block_errors(t, refined_recon, v, block) < gates.block_errors(t, base_recon, v, block)

    def prediction(self) -> SharedEncoding:
        """No residual: each block takes the closer prediction."""
        gate = self._gate(self.base, self.refined, self.block)
        recon = gates.apply(gate, self.block, self.refined, self.base)
        base_snr = snr_db(self.pair.target.data, self.base, self.pair.valid)
        return self._result(self._payload(gate, self.block), recon, gate, base_snr)

    def hybrid(self, total_bpp: float, klt: bool = True) -> SharedEncoding:
        """The gated prediction plus its coded residual, ``total_bpp`` in all."""
        from qmtgan.rd.rate import with_residual

        def coded(gate: np.ndarray, block: int, prediction: np.ndarray):
            payload = self._payload(gate, block)
            room = total_bpp - 8.0 * len(fmt.encode(payload)) / self.pair.samples
            if room <= 0:
                raise QmtganError(f"the base and gate alone take more than {total_bpp:g} bpp")
            hybrid, recon, _ = with_residual(payload, self.pair, prediction, room, klt)
            return hybrid, recon

        none = np.zeros(self.grid, bool)
        base_payload, base_recon = coded(none, self.block, self.base)
        _, refined_recon = coded(np.ones(self.grid, bool), self.block, self.refined)
        base_snr = snr_db(self.pair.target.data, base_recon, self.pair.valid)
        best = (base_payload, base_recon, none, base_snr)
        for block in self.blocks:
            gate = self._gate(base_recon, refined_recon, block)
            if not gate.any():
                continue
            payload, recon = coded(gate, block, gates.apply(gate, block, self.refined, self.base))
            snr = snr_db(self.pair.target.data, recon, self.pair.valid)
            if snr > best[3]:
                best = (payload, recon, gate, snr)
        return self._result(best[0], best[1], best[2], base_snr)

    def _result(self, payload, recon, gate, base_snr) -> SharedEncoding:
        return SharedEncoding(payload, recon, float(gate.mean()), base_snr,
                              snr_db(self.pair.target.data, self.refined, self.pair.valid))
