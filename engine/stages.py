"""The one table of zspace's stages: what each runs, how it is configured, what it reads and writes.

The command line, the pipeline (``zspace run``), the report and the benchmark all read
this table, so a stage is added or renamed in one place. Functions and config
classes are named as ``module:attribute`` strings and resolved on first use
(like console-script entry points), so reading the table never imports torch,
FAISS or openTSNE: ``zspace --help`` stays instant.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    name: str
    function: str  # "module:function", called as function(run_dir, ...)
    config: str | None  # "module:ConfigClass" holding every default of the stage, or None
    reads: tuple[str, ...]  # paths under RUN the stage needs
    output: str  # its main output under RUN: the stage finished when this exists
    summary: str  # one line for --help and the report

    def resolve(self):
        """The stage's engine function."""
        return resolve(self.function)

    def config_class(self):
        return resolve(self.config) if self.config else None

    def output_path(self, run_dir: str | os.PathLike) -> Path:
        return Path(run_dir) / self.output

    def command(self, run_dir: str | os.PathLike) -> str:
        """The command that produces this stage's output."""
        return f"zspace {self.name} --run {run_dir}"


def resolve(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


TABLE: tuple[Stage, ...] = (
    Stage("prepare", "engine.data.imagecache:prepare", "engine.data.config:PrepareConfig", (),
          "images.zarr/zarr.json", "decode, crop and resize a SOURCE once into RUN/images.zarr"),
    Stage("train", "engine.model.train:train", "engine.model.config:TrainConfig", ("images.zarr",),
          "checkpoints/last.pt", "train the autoencoder on RUN/images.zarr"),
    Stage("encode", "engine.model.encode:encode", "engine.model.config:EncodeConfig",
          ("images.zarr", "checkpoints/best.pt"), "latents.zarr/zarr.json",
          "stream the latent of every image into RUN/latents.zarr"),
    Stage("stats", "engine.analysis.stats:compute_stats", "engine.analysis.config:StatsConfig", ("latents.zarr",),
          "stats/stats.json", "number densities, radius, correlations, PCA, normality -> RUN/stats/"),
    Stage("structure", "engine.analysis.structure:compute_structure", "engine.analysis.config:StructureConfig",
          ("latents.zarr",), "structure/structure.json",
          "kNN graph, local and global intrinsic dimension, voids; data vs null -> RUN/structure/"),
    Stage("tsne", "engine.analysis.tsne:compute_tsne", "engine.analysis.config:TSNEConfig", ("latents.zarr",),
          "tsne/tsne.json", "openTSNE map of N random points, beside the null model -> RUN/tsne/"),
    Stage("attributes", "engine.attributes.stage:attributes", "engine.attributes.config:AttributesConfig",
          ("latents.zarr", "checkpoints/best.pt"), "attributes/attributes.json",
          "what the components carry: attribute readouts, directions, traversals judged by a classifier -> "
          "RUN/attributes/"),
    Stage("compare", "engine.generation.compare:compare", "engine.generation.config:CompareConfig",
          ("latents.zarr", "checkpoints/best.pt"), "generate/compare.json",
          "every sampler and path family decoded and judged -> RUN/generate/compare.json, .md, .png"),
    Stage("facemap", "engine.generation.facemap:facemap", "engine.generation.config:FacemapConfig",
          ("latents.zarr", "checkpoints/best.pt"), "facemap/facemap.json",
          "face rate against radius and void depth: region or voids? -> RUN/facemap/"),
    Stage("report", "engine.report.page:write_report", None, (), "report/index.html",
          "one static page of every figure and number -> RUN/report/index.html, report.md"),
    Stage("explore", "engine.explore.page:explore", "engine.explore.config:ExploreConfig",
          ("latents.zarr", "checkpoints/best.pt"), "explore/index.html",
          "an offline WebGL map of every point: faces on hover, neighbours, decoded paths and selections -> "
          "RUN/explore/index.html (needs zspace[explore])"),
)

STAGES: dict[str, Stage] = {s.name: s for s in TABLE}
STAGE_NAMES: tuple[str, ...] = tuple(STAGES)

__all__ = ["STAGES", "STAGE_NAMES", "Stage", "TABLE", "resolve"]
