"""Payloads made against a shared generator: the prediction a decoder forms from one.

The shared generator (a float .qmtg whose header says "shared", deployed once to both ends)
refines a pair's linear base. A pair's payload carries the base's coefficients (tensors
``linear/kernel`` and ``linear/bias``), the per-pair normalization, the per-block gate that
chose between the refinement and the base, and the SHA-256 of the shared model it was made
against. Where the encoder's gate keeps the base in every block, the payload says so instead
(predictor "linear-base"): the base's coefficients alone, which decode without the shared model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmtgan.runtime import gate as gates
from qmtgan.runtime import payload as fmt
from qmtgan.runtime.digest import sha256_file
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.infer import run_scene
from qmtgan.runtime.linear import apply_linear
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.numpy_generator import NumpyGenerator
from qmtgan.runtime.tiling import MAX_TILE

PREDICTOR = "shared-linear-base"
LINEAR_BASE = "linear-base"  # the gate kept the base everywhere: no model, gate or normalization
PREDICTORS = (PREDICTOR, LINEAR_BASE)
COEF_TENSOR = "linear/coef"  # float32, the offsets last (2.2-2.4)
KERNEL_TENSOR, BIAS_TENSOR = "linear/kernel", "linear/bias"  # any method, and float32 (2.5)


@dataclass(frozen=True)
class SharedModel:
    """A shared generator as both ends hold it."""

    path: Path
    sha256: str
    generator: NumpyGenerator
    tile: int
    header: dict

    @classmethod
    def read(cls, path: str | os.PathLike) -> "SharedModel":
        path = Path(path)
        model = fmt.read(path)
        header = model.header
        if not isinstance(header.get("shared"), dict):
            raise QmtganError(f"{path}: not a shared generator (its header has no 'shared' record); "
                              "make one with `qmtgan shared export`")
        try:
            tile = header["generator"]["patch_size"]
            if type(tile) is not int or not 1 <= tile <= MAX_TILE:
                raise QmtganError(f"generator patch_size {tile!r} is not in 1..{MAX_TILE}")
            if header["generator"].get("residual") != "reference":
                raise QmtganError("a shared generator refines its input (residual 'reference'), this one has "
                                  f"residual {header['generator'].get('residual')!r}")
            generator = NumpyGenerator(header, model.weights())
        except QmtganError as exc:
            raise QmtganError(f"{path}: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise QmtganError(f"{path}: inconsistent header ({exc})") from exc
        return cls(path, sha256_file(path), generator, tile, header)

    def refine(self, base: np.ndarray, norm: Normalization, valid: np.ndarray,
               progress: bool = False) -> np.ndarray:
        """The generator's refinement of a (bands, H, W) base prediction in DN; nodata 0."""
        out, _ = run_scene(self.generator, base, norm, self.tile, overlap=0, progress=progress)
        out[:, ~valid] = 0.0
        return out


def predictor_record(header: dict, name: str) -> dict | None:
    """The payload's predictor record, or None for a payload that carries its own generator."""
    record = header.get("predictor")
    if record is None:
        return None
    if not isinstance(record, dict) or record.get("kind") not in PREDICTORS:
        got = record.get("kind") if isinstance(record, dict) else record
        raise QmtganError(f"{name}: unknown predictor {got!r} (this qmtgan knows "
                          f"{', '.join(map(repr, PREDICTORS))})")
    return record


def check_model(record: dict, shared: SharedModel | None, name: str) -> SharedModel:
    if shared is None:
        raise QmtganError(f"{name} was made against the shared generator with SHA-256 "
                          f"{record.get('model_sha256')}: pass it with --shared FILE")
    if record.get("model_sha256") != shared.sha256:
        raise QmtganError(f"{name} was made against the shared generator {record.get('model_sha256')}, "
                          f"{shared.path} is {shared.sha256}")
    return shared


def coefficients(payload: fmt.Payload, bands: int, name: str) -> np.ndarray:
    """The linear base's coefficients, (bands, 9 bands + 1), the offsets last: the taps and the
    offsets, or (before 2.5) one float tensor of both."""
    names = [t.get("name") for t in payload.header["tensors"]]
    if names == [COEF_TENSOR]:
        coef = payload.weights()[0]
    elif names == [KERNEL_TENSOR, BIAS_TENSOR]:
        kernel, bias = payload.weights()
        if kernel.ndim != 2 or bias.shape != (kernel.shape[0],):
            raise QmtganError(f"{name}: linear taps of shape {kernel.shape} and offsets of shape "
                              f"{bias.shape} do not go together")
        coef = np.concatenate([kernel, bias[:, None]], axis=1).astype(np.float32)
    else:
        raise QmtganError(f"{name}: a shared-predictor payload holds the tensors {KERNEL_TENSOR} and "
                          f"{BIAS_TENSOR} (or, before 2.5, {COEF_TENSOR}), not {names}")
    if coef.ndim != 2 or coef.shape[0] != bands or not np.all(np.isfinite(coef)):
        raise QmtganError(f"{name}: linear coefficients of shape {coef.shape} are not {bands} rows of "
                          "finite values")
    return coef


def shared_prediction(payload: fmt.Payload, reference, shared: SharedModel | None, name: str = "payload",
                      progress: bool = False) -> np.ndarray:
    """The gated prediction of a shared-predictor payload (DN, nodata 0): the linear base, and
    the shared generator's refinement of it in the blocks the gate chose (none for a
    linear-base payload, which needs no shared model)."""
    header = payload.header
    record = predictor_record(header, name)
    refines = record["kind"] == PREDICTOR
    model = check_model(record, shared, name) if refines else None
    try:
        coef = coefficients(payload, reference.band_count, name)
        if refines:  # every record checked before anything is computed
            gate, block = gates.from_record(record.get("gate"), reference.shape)
            norm = Normalization.from_dict(header["normalization"])
        valid = reference.valid
        base = apply_linear(coef, reference.data, valid)
    except QmtganError as exc:
        raise QmtganError(exc.args[0] if exc.args[0].startswith(name) else f"{name}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise QmtganError(f"{name}: inconsistent header ({exc})") from exc
    if not refines or not gate.any():
        return base
    return gates.apply(gate, block, model.refine(base, norm, valid, progress), base)
