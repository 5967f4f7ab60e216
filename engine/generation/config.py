"""Configuration of the generation stages (samplers, generate, paths, compare): every default once."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLERS = ("uniform", "box", "gauss", "mvn", "mvn-core", "gmm", "origin", "data")  # compare's, for every model
PRIOR = "prior"  # z ~ N(0, I): a vae's own sampler, which compare adds for a vae (any run may ask for it)
ALL_SAMPLERS = SAMPLERS + (PRIOR,)


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


@dataclass
class FacemapConfig:
    n: int = 4000  # z-points per probe family (the radius sweep spreads its n over the radii)
    seed: int = 0
    radii: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(21))  # sweep radii / the data's median radius
    axes: int = 16  # principal axes of the axis sweep, each in both directions
    depth_bins: int = 8  # equal-count bins of void depth
    bootstrap: int = 200  # resamples for the logistic model's intervals
    strip: int = 8  # decoded images shown per depth bin
    device: str = "auto"

    def __post_init__(self):
        self.radii = tuple(float(r) for r in self.radii)
        if self.n < 10:
            raise ValueError(f"n must be >= 10, got {self.n}")
        if not self.radii or min(self.radii) < 0 or 1.0 not in self.radii:
            raise ValueError(f"radii must be >= 0 and include 1.0 (the data's median radius), got {self.radii}")
        if self.axes < 1 or self.depth_bins < 2 or self.bootstrap < 0 or self.strip < 0:
            raise ValueError(f"axes >= 1, depth_bins >= 2, bootstrap >= 0 and strip >= 0 required, got {self}")
