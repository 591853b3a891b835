"""The configuration of a generator: everything needed to rebuild it (stored in model.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from qmtgan.runtime.errors import QmtganError


@dataclass(frozen=True)
class GeneratorConfig:
    name: str = "multitempgan"   # multitempgan | unet | linknet | resnet
    bands: int = 12
    ngf: int = 20                # width of the first layer; the paper uses 20
    depth: int = 5               # down (and up) layers of the U-Net; the paper uses 5
    kernel: int = 5              # square kernel size; the paper uses 5x5, stride 2
    patch_size: int = 512

    def __post_init__(self) -> None:
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
