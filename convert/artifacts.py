"""The Artifact record every format makes, and the two int8 formats' choice, which measures
candidates on the scene and keeps the one that holds accuracy best:

  tflite-int8  full int8 from each of TensorFlow's two quantizers (the better kept; the
               normalization's statistics in float islands, so XNNPACK takes every op), then
               again with the output's per-band bias corrected (kept if it
               measures better); if it loses more than the threshold against float, the layers of
               the quantization debugger's three worst ops stay float (the convolutions stay
               int8); if that still loses too much, 16x8 (int16 activations).
  onnx-int8    ONNX Runtime static QDQ quantization (7-bit signed weights; the spectral map and
               what follows it in float: see onnx_int8.py), each calibration method tried.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from qmtgan.runtime.backends import BACKENDS, load_backend
from qmtgan.runtime.scratch import scratch_dir

TFLITE_FILE, ONNX_FILE = BACKENDS["tflite"].model_file, BACKENDS["onnxruntime"].model_file

log = logging.getLogger(__name__)


@dataclass
class Artifact:
    filename: str
    blob: bytes
    precision: str
    manifest: dict = field(default_factory=dict)   # extra manifest sections
    reports: dict = field(default_factory=dict)    # diagnostics written beside the bundle, never in it
    measured: object | None = None                 # a build.Measured if chosen by measuring


@dataclass
class Int8Context:
    """What the int8 formats need to choose: the calibration tiles and a scene measurement."""
    representative: np.ndarray
    measure: Callable[[str, bytes], object]        # (backend name, model bytes) -> Measured
    float_snr_db: float
    threshold_db: float
    explain: bool


def measure_bytes(backend: str, blob: bytes, measure_backend):
    """measure_backend(the runtime's backend for a model given as bytes), from a scratch file."""
    with scratch_dir() as tmp:
        path = Path(tmp) / BACKENDS[backend].model_file
        path.write_bytes(blob)
        return measure_backend(load_backend(backend, path))


def float_kept_layers(graph) -> tuple[str, ...]:
    """The graph's layers the payload keeps in float (the linear residual's spectral map)."""
    from qmtgan.quantize.policy import FLOAT_LAYERS

    return tuple(layer.name for layer in graph.layers if layer.name in FLOAT_LAYERS)


def _bias_corrected(graph, blob: bytes, ctx: Int8Context):
    """The graph with the int8 model's per-band output bias taken out of the layer the payload
    keeps in float (None if the generator has no such layer)."""
    from qmtgan.convert.bias_correction import band_bias, corrected_copy
    from qmtgan.runtime.infer import run_tiles
    from qmtgan.train.keras_backend import KerasBackend

    layers = float_kept_layers(graph)
    if not layers:
        return None, None
    reference = run_tiles(KerasBackend(graph), ctx.representative)[0]
    quantized = measure_bytes("tflite", blob, lambda b: run_tiles(b, ctx.representative)[0])
    bias = band_bias(quantized, reference)
    return corrected_copy(graph, layers[0], bias), bias


def tflite_int8(graph, ctx: Int8Context) -> Artifact:
    from qmtgan.convert import explain_int8
    from qmtgan.convert.tflite import QUANTIZERS, converter_for, float_islands, to_tflite
    from qmtgan.runtime.errors import QmtganError

    tried, failed = {}, {}
    for quantizer in QUANTIZERS:
        try:
            blob = to_tflite(graph, "int8", ctx.representative, quantizer=quantizer)
        except Exception as err:  # a quantizer lacking one of the graph's ops: the other one decides
            failed[quantizer] = str(err).splitlines()[0]
            continue
        tried[quantizer] = (blob, ctx.measure("tflite", blob))
    if not tried:
        raise QmtganError(f"no TFLite quantizer converts this graph to int8: {failed}")
    quantizer = max(tried, key=lambda q: tried[q][1].snr_vs_target_db)
    blob, full = tried[quantizer]
    record: dict = {"quantizer": quantizer, "float_islands": float_islands(blob),
                    "quantizers": {q: m.to_dict() for q, (_, m) in tried.items()} | failed,
                    "full_int8": full.to_dict(), "threshold_db": ctx.threshold_db}
    corrected, bias = _bias_corrected(graph, blob, ctx)
    if corrected is not None:
        corrected_blob = to_tflite(corrected, "int8", ctx.representative, quantizer=quantizer)
        measured = ctx.measure("tflite", corrected_blob)
        record["bias_correction"] = {
            "band_bias": [round(float(b), 6) for b in bias],
            "measured": measured.to_dict(),
            "kept": measured.snr_vs_target_db > full.snr_vs_target_db,
        }
        if record["bias_correction"]["kept"]:
            graph, blob, full = corrected, corrected_blob, measured
    loss = ctx.float_snr_db - full.snr_vs_target_db
    art = Artifact(TFLITE_FILE, blob, "int8", {"int8": record}, measured=full)
    errors = None
    if ctx.explain or loss > ctx.threshold_db:
        errors = explain_int8.layer_errors(
            converter_for(graph, "int8", ctx.representative), ctx.representative
        )
        record["worst_ops"] = explain_int8.worst(errors)
        trials = []
        if ctx.explain:
            trials = explain_int8.float_trials(graph, ctx.representative, ctx.measure, ctx.float_snr_db,
                                               float_kept_layers(graph))
            record["float_trials"] = [asdict(t) for t in trials]
        art.reports.update(explain_int8.report_files(errors, trials))
    if loss <= ctx.threshold_db:
        return with_op_profile(art, ctx.representative[:1], "tflite-int8")
    float_layers = tuple(dict.fromkeys(e.layer for e in errors[:3]))
    log.info(f"tflite-int8: full int8 loses {loss:.2f} dB against float (threshold {ctx.threshold_db} dB); "
             f"keeping layer(s) {', '.join(float_layers)} in float")
    selective = to_tflite(graph, "int8", ctx.representative, float_layers)
    measured = ctx.measure("tflite", selective)
    record["float_layers"] = list(float_layers)
    record["selective"] = measured.to_dict()
    if ctx.float_snr_db - measured.snr_vs_target_db <= ctx.threshold_db:
        chosen = Artifact(TFLITE_FILE, selective, f"int8 (float: {', '.join(float_layers)})",
                          art.manifest, art.reports, measured)
        return with_op_profile(chosen, ctx.representative[:1], "tflite-int8")
    loss = ctx.float_snr_db - measured.snr_vs_target_db
    log.warning(f"int8 with float {', '.join(float_layers)} still loses {loss:.2f} dB; "
                "falling back to 16x8 (int16 activations) for this bundle")
    record["fallback"] = f"selective int8 lost {loss:.2f} dB > {ctx.threshold_db} dB"
    return Artifact(TFLITE_FILE, to_tflite(graph, "16x8", ctx.representative),
                    "16x8 (fallback from int8)", art.manifest, art.reports)


def onnx_int8(graph, ctx: Int8Context) -> Artifact:
    from qmtgan.convert.onnx_export import to_onnx
    from qmtgan.convert.onnx_int8 import (ACTIVATIONS, CALIBRATIONS, WEIGHTS_RECORD, float_convolutions,
                                          quantize_onnx)
    from qmtgan.convert.tflite import layer_of

    float_model, float_layers = to_onnx(graph), float_kept_layers(graph)  # split after quantizing
    tried: dict[str, tuple[bytes, list[str], object]] = {}
    for method in CALIBRATIONS:
        blob, float_nodes = quantize_onnx(float_model, ctx.representative, method, float_layers)
        tried[method] = (blob, float_nodes, ctx.measure("onnxruntime", blob))
    best = max(tried, key=lambda m: tried[m][2].snr_vs_target_db)
    blob, float_nodes, measured = tried[best]
    left_float = [c for c in float_convolutions(blob) if layer_of(c) not in float_layers]
    if left_float:
        log.warning(f"onnx-int8 left convolution(s) in float: {', '.join(left_float)}")
    record = {"calibration": best, "activations": ACTIVATIONS, "weights": WEIGHTS_RECORD,
              "format": "QDQ", "float_layers": list(float_layers), "float_nodes": float_nodes,
              "float_convolutions": left_float,
              "calibrations": {m: rec.to_dict() for m, (_, _, rec) in tried.items()}}
    precision = f"int8 (float: {', '.join(float_layers)})" if float_layers else "int8"
    art = Artifact(ONNX_FILE, blob, precision, {"int8": record}, measured=measured)
    return with_op_profile(art, ctx.representative[:1], "onnx-int8")


def with_op_profile(art: Artifact, tile: np.ndarray, label: str) -> Artifact:
    """The artifact with its per-op time in a report beside the bundle (op_profile.md) and in
    the manifest."""
    from qmtgan.convert import op_profile

    profiler = (
        op_profile.tflite_op_profile if art.filename == TFLITE_FILE else op_profile.onnx_op_profile
    )
    profile = profiler(art.blob, tile)
    art.reports[op_profile.REPORT] = op_profile.markdown(profile, label).encode()
    art.manifest["op_profile"] = op_profile.summary(profile)
    return art
