"""Configuration of the analysis stages (stats, structure, tsne): every default once, light to import."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from engine.config import config_from_dict


@dataclass
class StatsConfig:
    bin_width: float = 0.25  # number-density bin width, as in the study
    radius_bin_widths: tuple[float, ...] = (0.5, 0.05)  # the study's two radius resolutions
    top_pairs: int = 20  # strongest |r| pairs listed
    pair_plots: int = 5  # joint 2D histograms of the most correlated pairs
    pair_bins: int = 120  # raster side of each joint histogram
    dominant_centre_mads: float = 5.0  # centre outlier: |mean - median| > this many robust sigmas ...
    dominant_centre_min: float = 1.0  # ... and > this many median component widths
    dominant_width_mads: float = 5.0  # width outlier: std - median > this many robust sigmas ...
    dominant_width_min: float = 0.5  # ... and > this fraction of the median width
    write_pca: bool = True  # stream PCA coordinates of every point into latents.zarr
    figures: bool = True  # draw the PNG figures (most of the run time on small clouds)
    block_rows: int | None = None  # rows per streamed block (default ~16 MB of float32)
    hold_blocks: bool | None = None  # on a cluster: read z once and keep it in the workers' memory for the
    # three passes (None: where it takes at most a third of their memory), else read it in each pass

    def __post_init__(self):
        self.radius_bin_widths = tuple(float(w) for w in self.radius_bin_widths)
        if not self.bin_width > 0:
            raise ValueError(f"bin_width must be > 0, got {self.bin_width}")
        if not all(w > 0 for w in self.radius_bin_widths):
            raise ValueError(f"radius_bin_widths must be > 0, got {self.radius_bin_widths}")

    @classmethod
    def from_dict(cls, d: dict) -> "StatsConfig":
        return config_from_dict(cls, d, "stats")


@dataclass
class StructureConfig:
    k: int = 16  # neighbours per point of the statistics
    graph_k: int = 90  # neighbours per point kept in latents.zarr (knn_indices): tsne of all points reuses the
    # exact graph up to perplexity graph_k / 3 (openTSNE takes 3 x perplexity neighbours; 90 for its default 30)
    index: str = "exact"  # exact | hnsw | ivf
    sample: int | None = None  # analyse this many randomly chosen points (default: all)
    seed: int = 0
    recall_queries: int = 2000  # queries for the recall of an approximate index
    void_probes: int = 10000  # probe points of the void statistic
    bootstrap: int = 200  # resamples for standard errors
    query_block: int = 8192  # kNN queries per FAISS call (bounds memory)
    tiles: str = "join"  # on a Dask cluster, the exact graph's tiles: join (each pair once) | faiss (faiss.knn)
    device: str = "auto"  # auto | cpu | cuda | cuda:N: on CUDA (auto: when present) the exact graph, the void probes
    #                       and local PCA run as blocked fp32 torch there; on a CPU the numba kernels (faster there)

    def __post_init__(self):
        if self.k < 3:
            raise ValueError(f"k must be >= 3 (local PCA and the ID estimators need neighbours), got {self.k}")
        if self.graph_k < self.k:
            raise ValueError(f"graph_k must be >= k = {self.k} (the statistics use the first k), got {self.graph_k}")
        if self.tiles not in ("join", "faiss"):
            raise ValueError(f"tiles must be join or faiss, got {self.tiles!r}")
        if self.sample is not None and self.sample < self.k + 2:
            raise ValueError(f"sample must be larger than k + 1, got {self.sample}")


EARLY_EXAGGERATION_ITER = 250  # openTSNE's default length of the early-exaggeration phase


TSNE_AFFINITIES = ("perplexity", "uniform")


@dataclass
class TSNEConfig:
    n: int = 20000  # points embedded (random rows, seeded); all when n >= N. The study used 20,000
    pca: int | None = None  # project onto the first K principal components first (None: embed z as is)
    perplexity: float = 30.0  # openTSNE default; the study used 10 for 20,000 points
    early_exaggeration: float = 12.0  # openTSNE default; the study used 16
    n_iter: int = 750  # total iterations, the first 250 with early exaggeration; the study used 1000
    seed: int = 0  # row choice, null-model draw, kNN index and initialisation
    null: bool = True  # embed as many fitted-normal points beside the data, same settings
    n_jobs: int = -1  # threads, scikit-learn convention (-1: all cores)
    # "perplexity": Gaussians calibrated to the perplexity on its 3 x perplexity neighbours (openTSNE's default);
    # "uniform": equal weights on each point's uniform_k nearest neighbours (openTSNE Uniform): a sparser P, a
    # faster optimisation, another map (compare both: zspace bench --scaling)
    affinity: str = "perplexity"
    uniform_k: int = 15
    # on a Dask cluster (--dask), a map of more than fit_n points is fitted on fit_n of them in the client and
    # the others are placed into it (openTSNE transform) as Dask tasks
    fit_n: int = 100_000

    def __post_init__(self):
        if self.affinity not in TSNE_AFFINITIES:
            raise ValueError(f"affinity must be one of {TSNE_AFFINITIES}, got {self.affinity!r}")
        if isinstance(self.uniform_k, bool) or not isinstance(self.uniform_k, (int, np.integer)) or self.uniform_k < 1:
            raise ValueError(f"uniform_k must be an integer >= 1 (neighbours per point), got {self.uniform_k!r}")
        if isinstance(self.fit_n, bool) or not isinstance(self.fit_n, (int, np.integer)) or self.fit_n < 10:
            raise ValueError(f"fit_n must be an integer >= 10 (points fitted before the others are placed), "
                             f"got {self.fit_n!r}")
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 10:
            raise ValueError(f"n must be an integer >= 10 (points embedded), got {self.n!r}")
        if self.pca is not None and (isinstance(self.pca, bool) or not isinstance(self.pca, (int, np.integer))
                                     or self.pca < 2):
            raise ValueError(f"pca must be None or an integer >= 2 (principal components kept), got {self.pca!r}")
        if not (isinstance(self.perplexity, numbers.Real) and np.isfinite(self.perplexity) and self.perplexity > 0):
            raise ValueError(f"perplexity must be a finite number > 0, got {self.perplexity!r}")
        if not (isinstance(self.early_exaggeration, numbers.Real) and np.isfinite(self.early_exaggeration)
                and self.early_exaggeration >= 1):
            raise ValueError(f"early_exaggeration must be a finite number >= 1, got {self.early_exaggeration!r}")
        if (isinstance(self.n_iter, bool) or not isinstance(self.n_iter, (int, np.integer))
                or self.n_iter <= EARLY_EXAGGERATION_ITER):
            raise ValueError(f"n_iter must be an integer > {EARLY_EXAGGERATION_ITER} (total iterations, the first "
                             f"{EARLY_EXAGGERATION_ITER} with early exaggeration), got {self.n_iter!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.null, bool):
            raise ValueError(f"null must be True or False, got {self.null!r}")
        if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, (int, np.integer)) or self.n_jobs == 0:
            raise ValueError(f"n_jobs must be a non-zero integer (-1: all cores), got {self.n_jobs!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "TSNEConfig":
        return config_from_dict(cls, d, "tsne")
