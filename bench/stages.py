"""The registry of bench stages, in the order they run and are reported: name -> function(ctx) -> rows."""

from __future__ import annotations

from collections.abc import Callable

from bench.results import Row
from bench.stages_analysis import stage_kernels, stage_knn, stage_local_pca, stage_stats, stage_tsne
from bench.stages_attributes import stage_attributes
from bench.stages_device import stage_device
from bench.stages_explore import stage_explore
from bench.stages_dask import stage_dask, stage_dask_structure
from bench.stages_data import stage_encode, stage_prepare, stage_train_feed, stage_train_ranks
from engine.stages import STAGES as PIPELINE_STAGES

STAGES: dict[str, Callable[[dict], list[Row]]] = {
    "prepare": stage_prepare,
    "train_feed": stage_train_feed,
    "train_ranks": stage_train_ranks,
    "encode": stage_encode,
    "kernels": stage_kernels,
    "stats": stage_stats,
    "knn": stage_knn,
    "local_pca": stage_local_pca,
    "tsne": stage_tsne,
    "attributes": stage_attributes,
    "device": stage_device,
    "dask": stage_dask,
    "dask_structure": stage_dask_structure,
    "explore": stage_explore,
}
NEED_IMAGES = {"prepare", "train_feed", "train_ranks", "encode"}  # the stages that read ctx["images"]

# which stage of the pipeline's table (engine/stages.py) each bench stage measures
MEASURES: dict[str, str] = {
    "prepare": "prepare", "train_feed": "train", "train_ranks": "train", "encode": "encode", "kernels": "stats", "stats": "stats",
    "knn": "structure", "local_pca": "structure", "tsne": "tsne", "attributes": "attributes", "device": "structure", "dask": "structure", "dask_structure": "structure",
    "explore": "explore",
}
if set(MEASURES.values()) - set(PIPELINE_STAGES) or set(MEASURES) != set(STAGES):
    raise RuntimeError(f"bench stages {sorted(MEASURES.items())} are out of step with engine/stages.py {list(PIPELINE_STAGES)}")
