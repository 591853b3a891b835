"""The deployment formats as data: one small class per kind, each owning its name, runtime,
precision, target board, whether it is built from the int8-rounded graph, and how it makes its
model file. Every `make` returns the same `Artifact` record; `build.py` measures and bundles
them all in one place."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from qmtgan.convert.artifacts import Artifact, Int8Context, onnx_int8, tflite_int8, with_op_profile
from qmtgan.runtime.backends import BACKENDS
from qmtgan.runtime.errors import QmtganError
from qmtgan.targets.registry import boards


INT8_OPTIONS = frozenset({"int8_threshold", "calibration_tiles"})
TUNING_OPTIONS = frozenset({"tune", "trials", "tuning_db", "rpc_tracker", "rpc_key"})


@dataclass(frozen=True)
class Format(ABC):
    name: str
    backend: str                # the runtime that runs it (runtime/backends.py)
    precision: str
    int8_weights: bool = False  # built from the graph whose float-kept kernels sit on the int8 grid
    target: str = "host-x86_64"
    # the `qmtgan convert` options this format uses, beyond what every format takes
    options: frozenset[str] = frozenset()

    @property
    def family(self) -> str:
        return self.name.split("-", 1)[0]

    @property
    def model_file(self) -> str:
        return BACKENDS[self.backend].model_file

    @abstractmethod
    def make(self, graph, ctx: Int8Context, tuning=None) -> Artifact:
        """The model file for `graph` (ctx: calibration tiles and a scene measurement)."""


class TFLite(Format):
    def make(self, graph, ctx, tuning=None):
        from qmtgan.convert.tflite import to_tflite

        art = Artifact(self.model_file, to_tflite(graph, self.precision, ctx.representative), self.precision)
        if self.precision == "16x8":  # reference kernels only: timing each op would take minutes
            return art
        return with_op_profile(art, ctx.representative[:1], self.name)


class TFLiteInt8(Format):
    def make(self, graph, ctx, tuning=None):
        return tflite_int8(graph, ctx)


class Onnx(Format):
    def make(self, graph, ctx, tuning=None):
        from qmtgan.convert.onnx_export import to_onnx

        art = Artifact(self.model_file, to_onnx(graph, for_onnxruntime=True), self.precision)
        return with_op_profile(art, ctx.representative[:1], self.name)


class OnnxInt8(Format):
    def make(self, graph, ctx, tuning=None):
        return onnx_int8(graph, ctx)


class TVM(Format):
    def make(self, graph, ctx, tuning=None):
        from pathlib import Path

        from qmtgan.convert.onnx_export import to_onnx
        from qmtgan.convert.tvm_build import compile_onnx
        from qmtgan.runtime.scratch import scratch_dir
        from qmtgan.targets.registry import board

        manifest: dict = {}
        shape = tuple(graph.inputs[0].shape)
        with scratch_dir() as tmp:
            so = Path(tmp) / self.model_file
            if tuning is None:
                record = compile_onnx(to_onnx(graph), shape, board(self.target), so)
            else:
                from qmtgan.convert.tvm_tune import compile_tuned

                record = compile_tuned(to_onnx(graph), shape, board(self.target), so, tuning)
                manifest["tvm_tuning"] = record["tvm_tuning"]
            manifest["tvm_schedules"] = record["tvm_schedules"]  # rules, and which database (host/board)
            return Artifact(self.model_file, so.read_bytes(), self.precision, manifest)


REGISTRY: dict[str, Format] = {f.name: f for f in (
    TFLite("tflite-fp32", "tflite", "fp32"),
    TFLite("tflite-fp16", "tflite", "fp16"),
    TFLite("tflite-dynamic", "tflite", "dynamic", int8_weights=True),
    TFLiteInt8("tflite-int8", "tflite", "int8", int8_weights=True, options=INT8_OPTIONS | {"explain_int8"}),
    TFLite("tflite-16x8", "tflite", "16x8", int8_weights=True, options=frozenset({"calibration_tiles"})),
    Onnx("onnx", "onnxruntime", "fp32"),
    OnnxInt8("onnx-int8", "onnxruntime", "int8", int8_weights=True, options=INT8_OPTIONS),
    # a TVM module for every board of targets/boards/ but the emulated one (it runs an rpi4's)
    *(TVM(f"tvm-{name}", "tvm", "fp32", target=name, options=TUNING_OPTIONS) for name, b in boards().items()
      if b.reach.method != "qemu"),
)}
FORMATS = tuple(REGISTRY)


def refuse_inapplicable(given: list[str], selected: list[str]) -> None:
    """An option given for formats none of which uses it is an error, not silently ignored."""
    for option in given:
        users = [name for name in FORMATS if option in REGISTRY[name].options]
        if not any(name in users for name in selected):
            flag = "--" + option.replace("_", "-")
            raise QmtganError(f"{flag} does not apply to {', '.join(selected)}; it applies to "
                              f"{', '.join(users)}")
