"""The configuration of a generator: everything needed to rebuild it (stored in model.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.tiling import PATCH_SIZE


RESIDUALS = ("none", "reference", "linear")


@dataclass(frozen=True)
class GeneratorConfig:
    name: str = "multitempgan"   # multitempgan | unet | linknet | resnet
    bands: int = 12
    ngf: int = 20                # width of the first layer; the paper uses 20
    depth: int = 5               # down (and up) layers of the U-Net; the paper uses 5
    kernel: int = 5              # square kernel size; the paper uses 5x5, stride 2
    patch_size: int = PATCH_SIZE
    # What the tanh output is added to before clipping to [-1, 1]: nothing (the paper), the
    # normalized reference (the generator predicts the change, zero parameters), or a learned
    # per-pixel spectral map of it (a 1x1 convolution, bands x (bands + 1) parameters).
    residual: str = "none"
    spectral_kernel: int = 1     # kernel of that spectral map (odd): 3 lets it absorb a sub-pixel shift

    def __post_init__(self) -> None:
        if self.residual not in RESIDUALS:
            raise QmtganError(
                f"generator residual must be one of {', '.join(RESIDUALS)}, got '{self.residual}'"
            )
        if self.spectral_kernel < 1 or self.spectral_kernel % 2 == 0:
            raise QmtganError(f"spectral_kernel must be odd and positive, got {self.spectral_kernel}")
        if self.spectral_kernel != 1 and self.residual != "linear":
            raise QmtganError("spectral_kernel applies to the linear residual only (--residual linear)")
        if self.residual != "none" and self.name != "multitempgan":
            raise QmtganError(f"a residual output exists for the multitempgan generator, not {self.name}")
        for f in ("bands", "ngf", "depth", "kernel", "patch_size"):
            if getattr(self, f) <= 0:
                raise QmtganError(f"generator {f} must be positive, got {getattr(self, f)}")
        if self.patch_size % (2**self.depth):
            raise QmtganError(f"patch size {self.patch_size} must be divisible by 2^depth = "
                              f"{2**self.depth} (the generator halves it {self.depth} times)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise QmtganError(f"unknown generator config key(s): {sorted(unknown)}")
        return cls(**d)
