"""The typed description of a network, stored inside every model file so the file describes itself."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["NetworkConfig", "ARCHITECTURES"]

ARCHITECTURES = ("residual_autoencoder", "gan_generator", "patch_discriminator")


@dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters of one network.

    Attributes:
        architecture: one of ``ARCHITECTURES``.
        features: channels at each resolution level, full resolution first; each further level halves
            the grid (so inputs are padded to a multiple of ``2 ** (len(features) - 1)``).
        blocks_per_level: residual blocks at each level of the encoder (the decoder mirrors one each).
        noise_level_input: feed a constant map of the noise level as a second input channel, so the
            strength of denoising can be steered.
        noise_level_scale: the noise-level channel holds the SD in normalised intensity units; the network
            multiplies it by this so typical levels (a few per cent) reach order one.
        in_channels: image channels (1 for scalar volumes).
        spatial_dims: 3 for a volumetric network; 2 for a planar one, which denoises each slice of what it is
            given on its own (a 2D image costs a 2D network's work, not a volume's).
    """

    architecture: str = "residual_autoencoder"
    features: tuple[int, ...] = (16, 32, 64)
    blocks_per_level: tuple[int, ...] = (1, 1, 2)
    noise_level_input: bool = True
    noise_level_scale: float = 20.0
    in_channels: int = 1
    spatial_dims: int = 3

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        if len(self.features) < 1 or any(int(f) < 1 for f in self.features):
            raise ValueError(f"features must be positive channel counts, got {self.features}")
        if len(self.blocks_per_level) != len(self.features):
            raise ValueError(
                f"blocks_per_level must have one entry per level ({len(self.features)}), got {self.blocks_per_level}"
            )
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.spatial_dims == 2 and self.architecture == "patch_discriminator":
            raise ValueError("a patch_discriminator is volumetric: spatial_dims must be 3")
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        object.__setattr__(self, "blocks_per_level", tuple(int(b) for b in self.blocks_per_level))

    @property
    def size_multiple(self) -> int:
        """Every spatial size the network sees must be a multiple of this."""
        return 2 ** (len(self.features) - 1)

    @property
    def size_multiples(self) -> tuple[int, int, int]:
        """What each axis (z, y, x) of an input must be a multiple of: a planar network takes any depth."""
        m = self.size_multiple
        return (1, m, m) if self.spatial_dims == 2 else (m, m, m)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["features"] = list(self.features)
        data["blocks_per_level"] = list(self.blocks_per_level)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown network config keys: {', '.join(sorted(unknown))}")
        return cls(**data)
