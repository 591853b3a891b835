"""Where full int8 loses accuracy, two ways:

- per op: TFLite's quantization debugger runs the int8 model with every quantized op's float
  twin next to it (both fed the same int8 input) and reports each op's output error, read in
  quantization steps (RMSE / scale): an op stands out when its error is large against the
  resolution int8 gives it;
- on the scene: each op type (and each layer the payload keeps in float) is kept in float in
  turn, everything else int8, and the scene's SNR is measured: what actually reaches the output.
  Tensors between int8 ops stay int8 either way, so this isolates the arithmetic, not the
  resolution of the activations."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass

import numpy as np

REPORT_STEM = "int8_layers"


@dataclass(frozen=True)
class LayerError:
    op: str
    tensor: str
    rmse_steps: float     # RMSE over the quantization scale
    rmse: float
    max_abs_error: float
    scale: float
    elements: int

    @property
    def layer(self) -> str:
        from qmtgan.convert.tflite import layer_of

        return layer_of(self.tensor)


def layer_errors(converter, tiles: np.ndarray) -> list[LayerError]:
    """converter: a TFLiteConverter set up for int8 with a representative dataset; tiles:
    (n, t, t, bands) normalized inputs the errors are measured on. Worst first."""
    import tensorflow as tf

    from qmtgan.runtime.quiet import native_output_captured
    from qmtgan.convert.tflite import tile_samples

    with native_output_captured():
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=tile_samples(tiles)
        )
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = []
    for r in csv.DictReader(io.StringIO(dump.getvalue())):
        scale, mse = float(r["scale"]), float(r["mean_squared_error"])
        rows.append(
            LayerError(
                r["op_name"],
                r["tensor_name"],
                float(np.sqrt(mse) / scale) if scale else float("inf"),
                float(np.sqrt(mse)),
                float(r["max_abs_error"]),
                scale,
                int(float(r["num_elements"])),
            )
        )
    return sorted(rows, key=lambda e: -e.rmse_steps)


@dataclass(frozen=True)
class FloatTrial:
    kept_float: str
    ops: int
    loss_db: float           # SNR against the target, float model minus this model
    snr_vs_float_db: float


def float_trials(graph, representative: np.ndarray, measure, float_snr_db: float,
                 layers: tuple[str, ...] = ()) -> list[FloatTrial]:
    """measure: (backend name, model bytes) -> Measured on the scene. Full int8 first."""
    from qmtgan.convert.tflite import calibrated_model, converter_for, layer_of, op_table, quantize_calibrated

    calibrated = calibrated_model(converter_for(graph, "int8", representative))
    ops = op_table(calibrated)
    groups = {"nothing (full int8)": []}
    groups.update({f"{kind} ops": [n for o, n in ops if o == kind] for kind in sorted({o for o, _ in ops})})
    groups.update({f"layer {layer}": [n for _, n in ops if layer_of(n) == layer] for layer in layers})
    trials = []
    for label, nodes in groups.items():
        measured = measure("tflite", quantize_calibrated(calibrated, nodes))
        trials.append(
            FloatTrial(label, len(nodes), float_snr_db - measured.snr_vs_target_db, measured.snr_vs_float_db)
        )
    return trials


def by_op(errors: list[LayerError]) -> dict[str, float]:
    """Each op type's summed squared error in steps: which kinds of op carry the loss."""
    total: dict[str, float] = {}
    for e in errors:
        total[e.op] = total.get(e.op, 0.0) + e.rmse_steps**2
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def markdown(errors: list[LayerError], trials: list[FloatTrial] = (), shown: int = 25) -> str:
    lines = [
        "Per-op output error of the int8 model against its float twin fed the same int8 input "
        "(TFLite quantization debugger), worst first. Steps = RMSE / the op's output scale.",
        "",
        "| # | op | layer | error (steps) | RMSE | max abs error | scale |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for i, e in enumerate(errors[:shown], start=1):
        lines.append(
            f"| {i} | {e.op} | {e.layer} | {e.rmse_steps:.2f} | {e.rmse:.3g} | "
            f"{e.max_abs_error:.3g} | {e.scale:.3g} |"
        )
    if len(errors) > shown:
        lines.append(f"\n{len(errors) - shown} more ops in {REPORT_STEM}.csv.")
    lines += ["", "By op type (sum of squared steps):", "", "| op | sum steps^2 |", "|---|---:|"]
    lines += [f"| {op} | {v:.1f} |" for op, v in by_op(errors).items()]
    if trials:
        lines += [
            "",
            "Kept in float in turn (everything else int8), measured on the whole scene:",
            "",
            "| kept in float | ops | loss vs float model (dB) | SNR vs float model (dB) |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {t.kept_float} | {t.ops} | {t.loss_db:.3f} | {t.snr_vs_float_db:.2f} |" for t in trials]
    return "\n".join(lines) + "\n"


def plot_png(errors: list[LayerError], shown: int = 30) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = errors[:shown][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(top) + 1.2))
    ax.barh([f"{e.layer} {e.op}" for e in top], [e.rmse_steps for e in top], color="tab:red")
    ax.set_xlabel("output error of the op (int8 steps, RMSE / scale)")
    ax.set_title("int8: worst ops")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def report_files(errors: list[LayerError], trials: list[FloatTrial] = ()) -> dict[str, bytes]:
    """int8_layers.csv/.md/.png, for the reports folder beside the bundle."""
    out = io.StringIO()
    fields = ["op", "layer", "tensor", "rmse_steps", "rmse", "max_abs_error", "scale", "elements"]
    writer = csv.DictWriter(out, fields)
    writer.writeheader()
    for e in errors:
        writer.writerow({**asdict(e), "layer": e.layer})
    return {
        f"{REPORT_STEM}.csv": out.getvalue().encode(),
        f"{REPORT_STEM}.md": markdown(errors, trials).encode(),
        f"{REPORT_STEM}.png": plot_png(errors),
    }


def worst(errors: list[LayerError], n: int = 3) -> list[dict]:
    """The manifest's record of the n worst ops."""
    return [{"op": e.op, "layer": e.layer, "rmse_steps": round(e.rmse_steps, 3)} for e in errors[:n]]
