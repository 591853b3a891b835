"""The deployment formats as data: one small class per kind, each owning its name, runtime,
precision, target board, whether it is built from the int8-rounded graph, and how it makes its
model file. Every `make` returns the same `Artifact` record; `build.py` measures and bundles
them all in one place."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from qmtgan.convert.artifacts import Artifact, Int8Context, onnx_int8, tflite_int8, with_op_profile
from qmtgan.targets.registry import boards


@dataclass(frozen=True)
class Format(ABC):
    name: str
    backend: str                # the runtime that runs it (runtime/backends.py)
    precision: str
    int8_weights: bool = False  # built from the graph whose float-kept kernels sit on the int8 grid
    target: str = "host-x86_64"

    @property
    def family(self) -> str:
        return self.name.split("-", 1)[0]

    @abstractmethod
    def make(self, graph, ctx: Int8Context, tuning=None) -> Artifact:
        """The model file for `graph` (ctx: calibration tiles and a scene measurement)."""


class TFLite(Format):
    def make(self, graph, ctx, tuning=None):
        from qmtgan.convert.tflite import to_tflite

        art = Artifact("model.tflite", to_tflite(graph, self.precision, ctx.representative), self.precision)
        if self.precision == "16x8":  # reference kernels only: timing each op would take minutes
            return art
        return with_op_profile(art, ctx.representative[:1], self.name)


class TFLiteInt8(Format):
    def make(self, graph, ctx, tuning=None):
        return tflite_int8(graph, ctx)


class Onnx(Format):
    def make(self, graph, ctx, tuning=None):
        from qmtgan.convert.onnx_export import to_onnx

        return with_op_profile(Artifact("model.onnx", to_onnx(graph), self.precision), ctx.representative[:1],
                               self.name)


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
            so = Path(tmp) / "model.so"
            if tuning is None:
                record = compile_onnx(to_onnx(graph), shape, board(self.target), so)
            else:
                from qmtgan.convert.tvm_tune import compile_tuned

                record = compile_tuned(to_onnx(graph), shape, board(self.target), so, tuning)
                manifest["tvm_tuning"] = record["tvm_tuning"]
            manifest["tvm_schedules"] = record["tvm_schedules"]  # rules, and which database (host/board)
            return Artifact("model.so", so.read_bytes(), self.precision, manifest)


REGISTRY: dict[str, Format] = {f.name: f for f in (
    TFLite("tflite-fp32", "tflite", "fp32"),
    TFLite("tflite-fp16", "tflite", "fp16"),
    TFLite("tflite-dynamic", "tflite", "dynamic", int8_weights=True),
    TFLiteInt8("tflite-int8", "tflite", "int8", int8_weights=True),
    TFLite("tflite-16x8", "tflite", "16x8", int8_weights=True),
    Onnx("onnx", "onnxruntime", "fp32"),
    OnnxInt8("onnx-int8", "onnxruntime", "int8", int8_weights=True),
    # a TVM module for every board of targets/boards/ but the emulated one (it runs an rpi4's)
    *(TVM(f"tvm-{name}", "tvm", "fp32", target=name) for name, b in boards().items()
      if b.reach.method != "qemu"),
)}
FORMATS = tuple(REGISTRY)
