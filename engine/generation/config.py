"""Configuration of the generation stages (samplers, generate, paths, compare): every default once."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLERS = ("uniform", "box", "gauss", "mvn", "mvn-core", "gmm", "origin", "data")


@dataclass
class SamplerConfig:
    bound: float = 1.5  # uniform: b, as in the study
    box_sigmas: float = 2.0  # box: half-width in fitted sigmas
    core_quantile: float = 0.5  # mvn-core: keep draws inside this quantile of the Mahalanobis radius
    gmm_components: int = 10  # gmm: components, as in the published comparison
    gmm_fit_points: int = 50000  # gmm: points the mixture is fitted on (a random subset)
    origin_radii: tuple[float, ...] = (0.5, 1.0, 2.0)  # origin: sphere radii around z = 0

    def __post_init__(self):
        self.origin_radii = tuple(float(r) for r in self.origin_radii)
        if not self.bound > 0:
            raise ValueError(f"bound must be > 0, got {self.bound}")
        if not self.box_sigmas > 0:
            raise ValueError(f"box_sigmas must be > 0, got {self.box_sigmas}")
        if not 0 < self.core_quantile <= 1:
            raise ValueError(f"core_quantile must be in (0, 1], got {self.core_quantile}")
        if self.gmm_components < 1:
            raise ValueError(f"gmm_components must be >= 1, got {self.gmm_components}")


@dataclass
class GenerateConfig:
    n: int = 64  # z-points drawn and decoded
    seed: int = 0
    device: str = "auto"


@dataclass
class PathsConfig:
    angle: float = 0.0  # rotation of the in-plane segments within their plane, degrees
    length: float = 4.0  # segment length in units of the cloud's spread along it
    steps: int = 9  # points per segment (odd: the centre is one of them)
    extend: float = 0.5  # the interpolation goes this far beyond both ends
    n_points: int = 5000  # projected data points drawn behind each path
    device: str = "auto"


@dataclass
class CompareConfig:
    n: int = 1000  # z-points per sampler
    seed: int = 0
    device: str = "auto"
