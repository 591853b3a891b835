"""ONNX -> TVM Relax module compiled for a board of targets/, exported as a shared library.

TVM 0.27: Relax only; ONNX import with tvm.relax.frontend.onnx; targets are JSON dicts (the
CLI string form is gone); cross compilation with tvm.support.cc.cross_compiler. Untuned:
MetaSchedule tuning is not run here.
"""

from __future__ import annotations

import time
from pathlib import Path

from qmtgan.runtime.backends import elf_machine as elf_machine_of
from qmtgan.runtime.errors import QmtganError
from qmtgan.targets.registry import Board


def require_tvm():
    """The tvm package, or one clear error naming what to install."""
    try:
        import onnx  # noqa: F401 - the frontend needs it
        import tvm
    except ImportError as exc:
        raise QmtganError(
            "TVM modules need apache-tvm 0.27 and apache-tvm-ffi (pip install 'qmtgan[tvm]')"
        ) from exc
    return tvm


def relax_module(onnx_bytes: bytes, input_shape: tuple[int, ...]):
    """(Relax module imported from the ONNX model at a fixed input shape, its input name)."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load_model_from_string(onnx_bytes)
    name = model.graph.input[0].name
    return from_onnx(model, shape_dict={name: list(input_shape)}, dtype_dict={name: "float32"}), name


def export_module(executable, board: Board, out_so: Path) -> None:
    """Export as a shared library, cross-compiled with the board's compiler when it has one."""
    from tvm.support import cc

    cross = board.compiler()
    executable.export_library(str(out_so), fcompile=cc.cross_compiler(cross) if cross else None)


def compile_onnx(onnx_bytes: bytes, input_shape: tuple[int, ...], board: Board, out_so: Path) -> dict:
    tvm = require_tvm()
    from qmtgan.convert.tvm_rules import RULES, pipeline

    board.compiler()  # a missing cross compiler fails before the compile
    t0 = time.perf_counter()
    mod, name = relax_module(onnx_bytes, input_shape)
    target = tvm.target.Target(board.tvm_target)
    executable = tvm.compile(mod, target=target, relax_pipeline=pipeline(target))
    export_module(executable, board, out_so)
    return {"tvm": tvm.__version__, "target": board.tvm_target, "compile_s": time.perf_counter() - t0,
            "input_name": name, "tvm_schedules": {"rules": list(RULES), "database": None}}


def elf_machine(path: Path) -> str:
    """The architecture an ELF shared object was built for (from its header, no `file` needed)."""
    head = Path(path).read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        raise QmtganError(f"{path}: not an ELF file")
    return elf_machine_of(head)
