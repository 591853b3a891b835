"""Inference backends. Each loads one model file and maps a normalized (1, t, t, bands)
float32 tile to the generator's normalized output; integer I/O is (de)quantized inside, so
every backend returns the same record. The backend library is imported only when a backend
is created (a board has one of them, not all)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from qmtgan.runtime.errors import QmtganError


class Backend(ABC):
    """Every backend is made as Backend(model_path, threads, xnnpack) and maps a normalized
    (1, t, t, bands) float32 tile to a float32 output with `run`."""

    name = ""
    # what a board installs for this backend (pip distributions), the modules any one of which
    # provides it, and the distributions whose versions a record reports
    requires: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    reported: tuple[str, ...] = ()
    model_file = ""            # the model's file name in a bundle
    # compiled for one board's CPU (checked by its ELF machine); the C++ runner and RPC run it
    built_for_a_board = False

    def __init__(self, model_path: str | os.PathLike, threads: int | None = None, xnnpack: bool = True):
        self.model_path = Path(model_path)
        self.threads = threads or os.cpu_count() or 1
        self.xnnpack = xnnpack  # TFLite only: its default CPU delegate (a board's TOML may turn it off)

    @abstractmethod
    def run(self, tile: np.ndarray) -> np.ndarray:
        """(1, t, t, bands) normalized float32 -> the generator's normalized output."""

    @staticmethod
    def file_kind(head: bytes) -> str | None:
        """What the first bytes of a model file say it is for this backend: None when they fit,
        else what they look like (a model file is checked before the library parses it)."""
        return None

    def input_shape(self) -> tuple | None:
        """The model's input shape as the library reports it (None where it does not say)."""
        return None

    @staticmethod
    def float_io(tile: int, bands: int) -> dict:
        """The bundle's I/O record of a model with float32 tiles in and out."""
        shape = [1, tile, tile, bands]
        return {"input": {"shape": shape, "dtype": "float32", "quantization": None},
                "output": {"shape": shape, "dtype": "float32", "quantization": None}}

    def io_record(self, tile: int, bands: int) -> dict:
        """Input/output shape, dtype and quantization as this library sees the loaded model."""
        return self.float_io(tile, bands)


def _native_output_unless_verbose():
    import contextlib
    import logging

    from qmtgan.runtime.quiet import native_output_captured

    verbose = logging.getLogger("qmtgan").isEnabledFor(logging.DEBUG)
    return contextlib.nullcontext() if verbose else native_output_captured()


def _litert():
    """The interpreter module: ai-edge-litert, or tflite_runtime where a board only has that."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter
        except ImportError as exc:
            raise QmtganError("the tflite backend needs ai-edge-litert (or tflite-runtime)") from exc
    return interpreter


class LiteRTBackend(Backend):
    STAGING_ROWS = 32
    name = "tflite"
    model_file = "model.tflite"
    requires = ("ai-edge-litert",)
    modules = ("ai_edge_litert", "tflite_runtime")
    reported = ("ai-edge-litert", "tflite-runtime")

    def __init__(self, model_path, threads=None, xnnpack=True):
        super().__init__(model_path, threads, xnnpack)
        lite = _litert()
        resolver = (
            lite.OpResolverType.AUTO if xnnpack else lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" from C++: shown with -v only
        with _native_output_unless_verbose():
            self.interpreter = lite.Interpreter(model_path=str(self.model_path), num_threads=self.threads,
                                                experimental_op_resolver_type=resolver)
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._staging = None  # float32 rows the input is quantized in (allocated once)

    @staticmethod
    def file_kind(head: bytes) -> str | None:
        return None if head[4:8] == b"TFL3" else "not a TFLite flatbuffer (no TFL3 identifier)"

    def input_shape(self) -> tuple | None:
        return tuple(int(v) for v in self.input["shape"])

    def _quantized_input(self, tile: np.ndarray) -> np.ndarray:
        """rint(tile / scale + zero), clipped, computed a band of rows at a time in one small
        reused float32 buffer: this runs once per tile, and with whole-tile temporaries it costs
        as much as a small model's inference and several times the integer tile's memory."""
        scale, zero = self.input["quantization"]
        info = np.iinfo(self.input["dtype"])
        rows = tile.shape[1]
        step = max(1, min(rows, self.STAGING_ROWS))
        if (
            self._staging is None
            or self._staging.shape[2:] != tile.shape[2:]
            or self._staging.shape[0] != tile.shape[0]
        ):
            self._staging = np.empty((tile.shape[0], step, *tile.shape[2:]), np.float32)
        out = np.empty(tile.shape, self.input["dtype"])
        for top in range(0, rows, step):
            part = tile[:, top:top + step]
            buf = self._staging[:, : part.shape[1]]
            np.divide(part, np.float32(scale), out=buf)
            np.add(buf, np.float32(zero), out=buf)
            np.rint(buf, out=buf)
            np.clip(buf, info.min, info.max, out=buf)
            out[:, top:top + step] = buf
        return out

    def run(self, tile):
        x = self._quantized_input(tile) if self.input["dtype"] in (np.int8, np.int16) else tile
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        if self.output["dtype"] in (np.int8, np.int16):
            scale, zero = self.output["quantization"]
            out = y.astype(np.float32)
            np.subtract(out, np.float32(zero), out=out)
            np.multiply(out, np.float32(scale), out=out)
            return out
        return y.astype(np.float32, copy=False)

    def io_record(self, tile: int, bands: int) -> dict:
        return {key: {"shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                      "quantization": [float(d["quantization"][0]), int(d["quantization"][1])]}
                for key, d in (("input", self.input), ("output", self.output))}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    model_file = "model.onnx"
    requires = modules = reported = ("onnxruntime",)

    def __init__(self, model_path, threads=None, xnnpack=True):
        super().__init__(model_path, threads, xnnpack)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise QmtganError("the onnxruntime backend needs the onnxruntime package") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def io_record(self, tile: int, bands: int) -> dict:
        i, o = self.session.get_inputs()[0], self.session.get_outputs()[0]
        return {"input": {"shape": i.shape, "dtype": i.type, "quantization": None},
                "output": {"shape": o.shape, "dtype": o.type, "quantization": None}}

    @staticmethod
    def file_kind(head: bytes) -> str | None:
        # an ONNX ModelProto starts with field 1 (ir_version, a varint): tag byte 0x08
        return None if head[:1] == b"\x08" else "not an ONNX model (no ir_version field first)"

    def input_shape(self) -> tuple | None:
        # a dynamic dimension is a name or None: reported as None, checked as any size
        return tuple(d if isinstance(d, int) else None for d in self.session.get_inputs()[0].shape)

    def run(self, tile):
        return self.session.run(None, {self.input_name: tile})[0].astype(np.float32, copy=False)


class TVMBackend(Backend):
    """A Relax module exported as a shared library, run by the TVM runtime's virtual machine."""

    name = "tvm"
    model_file = "model.so"
    built_for_a_board = True
    requires = reported = ("apache-tvm", "apache-tvm-ffi")
    modules = ("tvm",)

    def __init__(self, model_path, threads=None, xnnpack=True):
        super().__init__(model_path, threads, xnnpack)
        os.environ.setdefault("TVM_NUM_THREADS", str(self.threads))
        try:
            import tvm
            from tvm import relax
        except ImportError as exc:
            raise QmtganError("the tvm backend needs apache-tvm (and apache-tvm-ffi)") from exc
        self.tvm = tvm
        self.device = tvm.cpu()
        try:
            self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(self.model_path)), self.device)
        except Exception as exc:  # a module for another architecture fails to load here
            raise QmtganError(f"{self.model_path}: cannot load TVM module on this machine ({exc})") from exc

    @staticmethod
    def file_kind(head: bytes) -> str | None:
        return None if head[:4] == b"\x7fELF" else "not a shared library (no ELF header)"

    def run(self, tile):
        out = self.vm["main"](self.tvm.runtime.tensor(np.ascontiguousarray(tile), self.device))
        return out.numpy().astype(np.float32, copy=False)


ELF_MACHINES = {62: "x86_64", 183: "aarch64", 40: "arm"}


def elf_machine(head: bytes) -> str:
    """The architecture an ELF file was built for, from its first 20 bytes (e_machine)."""
    machine = int.from_bytes(head[18:20], "little")
    return ELF_MACHINES.get(machine, f"e_machine {machine}")


BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (LiteRTBackend, OnnxRuntimeBackend, TVMBackend)}


def load_backend(name: str, model_path: str | os.PathLike, threads: int | None = None,
                 xnnpack: bool = True) -> Backend:
    if name not in BACKENDS:
        raise QmtganError(f"unknown backend '{name}' (available: {', '.join(BACKENDS)})")
    return BACKENDS[name](model_path, threads, xnnpack)
