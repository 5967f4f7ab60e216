"""The two size profiles of the benchmark, in one place: ``full`` (the committed results) and ``small``
(``--small``, for CI). Every stage reads its sizes and repeat counts from here, so a profile is changed
by editing one ``Sizes``; how long ``--small`` takes is stated in the docstring of ``bench.harness``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    images: int  # JPEGs decoded by prepare (the CelebA subset holds 6,000)
    prepare_repeat: int
    prepare_one_worker: bool  # also time prepare with one worker (too small to mean anything in CI)
    cache_images: int | None  # images in the cache that train_feed and encode read; None: all of ``images``
    train_steps: int
    cuda_train_steps: int
    encode_repeat: int
    kernels_rows: int  # the latent cloud of the in-memory kernels (202,599: all of CelebA)
    stats: tuple[tuple[int, str], ...]  # (rows, what the row measures) of the end-to-end stats runs
    knn_rows: int
    local_pca_rows: int
    tsne_rows: int  # the map of the tsne stage (the study's 20,000), beside openTSNE's defaults and sklearn
    attributes_rows: int  # latents of the attributes stage (202,599: all of CelebA)
    attributes_count: int  # planted attributes (CelebA has 40)
    device_knn_rows: int  # the exact graph on a GPU (202,599: all of CelebA)
    device_cpu_rows: int  # the same code on CPU torch where no GPU is present
    explore_rows: int  # the explore page of every point of a run this size (202,599: all of CelebA)
    explore_small_rows: int  # and a page of a seeded sample of its map


SIZES: dict[str, Sizes] = {
    "full": Sizes(images=6000, prepare_repeat=2, prepare_one_worker=True, cache_images=None, train_steps=40,
                  cuda_train_steps=100, encode_repeat=2, kernels_rows=202_599,
                  stats=((202_599, "time"), (1_000_000, "memory")), knn_rows=50_000, local_pca_rows=202_599,
                  tsne_rows=20_000, attributes_rows=202_599, attributes_count=40,
                  device_knn_rows=202_599, device_cpu_rows=20_000, explore_rows=202_599, explore_small_rows=10_000),
    "small": Sizes(images=512, prepare_repeat=1, prepare_one_worker=False, cache_images=256, train_steps=3,
                   cuda_train_steps=10, encode_repeat=1, kernels_rows=20_000, stats=((20_000, "time"),),
                   knn_rows=5_000, local_pca_rows=20_000, tsne_rows=1_000, attributes_rows=20_000,
                   attributes_count=3, device_knn_rows=20_000, device_cpu_rows=2_000, explore_rows=2_000,
                   explore_small_rows=1_000),
}


def profile(small: bool) -> Sizes:
    return SIZES["small" if small else "full"]


@dataclass(frozen=True)
class ScalingSizes:
    ns: tuple[int, ...]  # stats, kNN, structure and the all-points map at each (the study's t-SNE at the largest)
    stats_only: tuple[int, ...]  # stats also here
    tsne_subsets: tuple[int, ...]  # maps of random subsets of the largest cloud
    skipped: tuple[str, ...]  # what the profile leaves out, and why (stated in SCALING.md)


SCALING: dict[str, ScalingSizes] = {
    "full": ScalingSizes(ns=(10_000, 50_000, 202_599), stats_only=(1_000_000,), tsne_subsets=(80_000, 165_000),
                         skipped=("the kNN graph of 1,000,000 points: 25x the pairs of 202,599 (about 35 minutes on "
                                  "2 cores if it scaled as N^2 from the rate measured there), beyond this run's "
                                  "budget",)),
    "small": ScalingSizes(ns=(1_000, 2_000, 4_000), stats_only=(8_000,), tsne_subsets=(3_000,), skipped=()),
}


def scaling_sizes(small: bool) -> ScalingSizes:
    return SCALING["small" if small else "full"]
