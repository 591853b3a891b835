"""The exported graph's rewrites and the int8 tools: exact in float, and on the int8 grid."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("kernel", [3, 4, 5])
def test_deploy_graph_computes_the_trained_function(kernel):
    """Sub-pixel transposed convolutions and centred normalization: the same outputs as the
    Keras generator in float (tolerance 1e-5 on a [-1, 1] output), for odd and even kernels."""
    from qmtgan.convert.deploy_graph import deploy_graph
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.models.registry import build_generator

    model = build_generator(GeneratorConfig(ngf=4, depth=3, kernel=kernel, patch_size=16, residual="linear",
                                            spectral_kernel=3), batch_size=1)
    rng = np.random.default_rng(kernel)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    graph = deploy_graph(model)
    names = {layer.__class__.__name__ for layer in graph.layers}
    assert "Conv2DTranspose" not in names and "GroupNormalization" not in names
    x = rng.uniform(-1, 1, (1, 16, 16, 12)).astype(np.float32)
    expected, got = model(x).numpy(), graph(x).numpy()
    assert np.abs(expected).max() > 0.1  # the output is not flat
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_compensated_rounding_is_on_the_int8_grid_and_beats_nearest():
    from qmtgan.convert.int8_rounding import QMAX, compensated_kernel

    rng = np.random.default_rng(0)
    # correlated inputs, as neighbouring pixels and bands are
    base = rng.normal(size=(20_000, 1))
    rows = base + 0.1 * rng.normal(size=(20_000, 27))
    kernel = rng.normal(0, 0.3, (3, 3, 3, 4)).astype(np.float32)
    rounded = compensated_kernel(kernel, rows)
    flat, out = kernel.reshape(-1, 4), rounded.reshape(-1, 4)
    scale = np.abs(flat).max(axis=0) / QMAX
    levels = out / scale
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-3)
    assert np.allclose(np.abs(levels).max(axis=0), QMAX, atol=1e-3)  # the converter finds the same scale
    nearest = np.rint(flat / scale) * scale
    err = lambda w: float(np.sqrt(np.mean((rows @ (w - flat)) ** 2)))
    assert err(out) < 0.5 * err(nearest)


def test_float_layers_stay_float_and_the_rest_int8():
    from ai_edge_litert.interpreter import Interpreter

    from qmtgan.convert.tflite import layer_of, to_tflite
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.models.registry import build_generator

    model = build_generator(
        GeneratorConfig(ngf=4, depth=2, kernel=3, patch_size=16, residual="linear"), batch_size=1
    )
    tiles = np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 12)).astype(np.float32)
    blob = to_tflite(model, "int8", tiles, float_layers=("spectral",))
    interpreter = Interpreter(model_content=blob)
    tensors = interpreter.get_tensor_details()
    kinds = {}
    for op in interpreter._get_ops_details():
        out = tensors[op["outputs"][0]]
        if op["op_name"] == "CONV_2D":
            kinds[layer_of(out["name"])] = np.dtype(out["dtype"]).name
    assert kinds.pop("spectral") == "float32"
    assert kinds and set(kinds.values()) == {"int8"}
    assert interpreter.get_input_details()[0]["dtype"] == np.int8


def test_the_legacy_quantizer_keeps_each_leaky_relu_within_its_input_range():
    """A LeakyReLU's output never exceeds its input, so its int8 range should not either (within
    a step). The int8 format measures both quantizers; this pins the property it relies on."""
    from ai_edge_litert.interpreter import Interpreter

    from qmtgan.convert.deploy_graph import deploy_graph
    from qmtgan.convert.tflite import to_tflite
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.models.registry import build_generator

    model = build_generator(
        GeneratorConfig(ngf=4, depth=2, kernel=3, patch_size=16, residual="linear"), batch_size=1
    )
    tiles = np.random.default_rng(2).uniform(-1, 1, (4, 16, 16, 12)).astype(np.float32)
    blob = to_tflite(deploy_graph(model), "int8", tiles, quantizer="legacy")
    interpreter = Interpreter(model_content=blob)
    tensors = interpreter.get_tensor_details()
    top = lambda t: (127 - t["quantization"][1]) * t["quantization"][0]
    checked = 0
    for op in interpreter._get_ops_details():
        if op["op_name"] == "LEAKY_RELU":
            inp, out = tensors[op["inputs"][0]], tensors[op["outputs"][0]]
            assert out["dtype"] == np.int8
            assert top(out) <= top(inp) + 2 * out["quantization"][0]
            checked += 1
    assert checked >= 2


def test_converter_output_is_silenced_but_kept_for_a_failure(capfd):
    import os

    from qmtgan.runtime.quiet import native_output_captured

    with native_output_captured():
        os.write(1, b"fully_quantize: 1\n")
        print("captured variable")
    assert capfd.readouterr().out == ""
    with pytest.raises(RuntimeError), native_output_captured():
        os.write(2, b"why the conversion failed\n")
        raise RuntimeError("conversion failed")
    assert "why the conversion failed" in capfd.readouterr().err
    print("still printing")
    assert capfd.readouterr().out == "still printing\n"


def test_onnx_runtime_runs_every_convolution_of_the_deploy_graph_in_int8():
    """ONNX Runtime has no int8 ConvTranspose kernel: quantized as trained, the decoder's
    transposed convolutions stay float; in the sub-pixel form none does."""
    from qmtgan.convert.deploy_graph import deploy_graph
    from qmtgan.convert.onnx_export import to_onnx
    from qmtgan.convert.onnx_int8 import float_convolutions, quantize_onnx
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.models.registry import build_generator

    model = build_generator(GeneratorConfig(ngf=4, depth=2, kernel=3, patch_size=16), batch_size=1)
    tiles = np.random.default_rng(2).uniform(-1, 1, (4, 16, 16, 12)).astype(np.float32)
    as_trained = float_convolutions(quantize_onnx(to_onnx(model), tiles, "MinMax")[0])
    assert len(as_trained) == 2 and all("deconv" in name for name in as_trained)
    assert float_convolutions(quantize_onnx(to_onnx(deploy_graph(model)), tiles, "MinMax")[0]) == []


def test_onnx_int8_keeps_the_spectral_map_float_to_the_output_and_its_other_weights_in_7_bits():
    """With the spectral map kept float, its convolution reads the float input (a private
    transpose, no dequantized int8 copy), everything after it to the output is float, every
    other convolution is int8 with weights in [-64, 64] (no VPMADDUBSW pair sum can saturate),
    the DepthToSpaces are split, and the prediction is closer to float than with the spectral
    map in int8."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from qmtgan.convert.deploy_graph import deploy_graph
    from qmtgan.convert.onnx_export import to_onnx
    from qmtgan.convert.onnx_int8 import float_convolutions, quantize_onnx
    from qmtgan.train.models.registry import build_generator, default_config

    rng = np.random.default_rng(3)
    model = build_generator(default_config("multitempgan", ngf=4, depth=2, patch_size=32, residual="linear",
                                           spectral_kernel=3), batch_size=1)
    spectral = model.get_layer("spectral")
    kernel, bias = spectral.get_weights()
    spectral.set_weights([kernel + rng.normal(0, 0.05, kernel.shape).astype(np.float32), bias])
    graph = deploy_graph(model)
    tiles = rng.uniform(-1, 1, (6, 32, 32, 12)).astype(np.float32)
    float_model = to_onnx(graph)
    mixed, float_nodes = quantize_onnx(float_model, tiles, "MinMax", ("spectral",))
    all_int8, none_float = quantize_onnx(float_model, tiles, "MinMax")
    assert none_float == [] and float_convolutions(all_int8) == []
    for blob in (mixed, all_int8):  # split after quantizing
        assert "DepthToSpace" not in [n.op_type for n in onnx.load_model_from_string(blob).graph.node]
    assert [c for c in float_convolutions(mixed) if "spectral" in c] and \
        not [c for c in float_convolutions(mixed) if "spectral" not in c]
    proto = onnx.load_model_from_string(mixed)
    by_name = {n.name: n for n in proto.graph.node}
    assert any(name.endswith("/float") and by_name[name].op_type == "Transpose" for name in float_nodes)
    assert {by_name[name].op_type for name in float_nodes} >= {"Conv", "Add", "Clip"}
    producers = {out: n for n in proto.graph.node for out in n.output}
    assert producers[proto.graph.output[0].name].op_type != "DequantizeLinear"  # float to the output
    weights = [numpy_helper.to_array(t) for t in proto.graph.initializer
               if t.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w).max()) for w in weights) <= 64

    def error(blob):
        session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        y = np.concatenate([session.run(None, {"reference": t[None]})[0] for t in tiles])
        return float(np.mean((y - model.predict(tiles, verbose=0)) ** 2))

    assert error(mixed) < error(all_int8)


@pytest.mark.parametrize("quantizer", ["mlir", "legacy"])
def test_int8_normalization_statistics_run_in_float_and_xnnpack_takes_every_op(quantizer):
    """XNNPACK has no int8 RSQRT: rewritten into float islands, the int8 model is one XNNPACK
    partition, and its output stays within one int8 step of the model as quantized."""
    from ai_edge_litert.interpreter import Interpreter

    from qmtgan.convert.deploy_graph import deploy_graph
    from qmtgan.convert.int8_islands import float_statistics
    from qmtgan.convert.tflite import _quiet_convert, converter_for, float_islands, to_tflite
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.models.registry import build_generator

    model = build_generator(
        GeneratorConfig(ngf=4, depth=3, kernel=3, patch_size=32, residual="linear"), batch_size=1
    )
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    graph = deploy_graph(model)
    tiles = rng.uniform(-1, 1, (4, 32, 32, 12)).astype(np.float32)
    plain = _quiet_convert(converter_for(graph, "int8", tiles, quantizer))
    islands = to_tflite(graph, "int8", tiles, quantizer=quantizer)
    norms = sorted(layer.name for layer in graph.layers if layer.name.endswith("_bn"))
    assert len(norms) >= 3 and float_islands(plain) == [] and float_islands(islands) == norms
    assert float_statistics(islands) == (islands, [])  # nothing left to rewrite

    def run(blob):
        interpreter = Interpreter(model_content=blob, num_threads=1)
        ops = len(interpreter._get_ops_details())  # the delegate's nodes are added when allocating
        interpreter.allocate_tensors()
        entry, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        scale, zero = entry["quantization"]
        outputs = []
        for tile in tiles:
            interpreter.set_tensor(entry["index"], np.clip(np.rint(tile / scale + zero), -128, 127)
                                   .astype(np.int8)[None])
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(out["index"]).astype(np.int32))
        partitions = interpreter._interpreter.NumNodes() - ops
        return np.stack(outputs), partitions

    (before, parts_before), (after, parts_after) = run(plain), run(islands)
    assert parts_before > 1 and parts_after == 1
    scale, zero = Interpreter(model_content=islands).get_output_details()[0]["quantization"]
    reference = graph(tiles).numpy()
    rmse = lambda q: float(np.sqrt(np.mean(((q[:, 0] - zero) * scale - reference) ** 2)))
    assert np.std(after) > 5  # not a flat output
    assert rmse(after) <= 1.05 * rmse(before)  # the float statistics are no less accurate
