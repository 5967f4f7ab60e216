"""``zspace run``: every stage in order, each skipped when it finished with the same inputs.

Stages: prepare -> train -> encode -> stats -> structure -> tsne -> attributes -> compare -> facemap -> report
-> explore. The last needs the optional extra zspace[explore] (Bokeh); without it the stage says what to install
and is left for a later run, and every other stage runs as before.

Each stage has a key: the hash of its own options and the key of the stage before
it, so a changed option changes that stage's key and every later one. After a
stage finishes, its key goes into ``RUN/pipeline.json``. On the next run a stage
whose key is recorded and whose output is there is skipped; one whose key
changed runs again from scratch (the cache and the model are rebuilt, not
resumed); one that started with the same key but never finished (interrupted) runs
again and, where the stage can (prepare, train, encode), resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from engine.analysis.cluster import open_cluster
from engine.analysis.config import StructureConfig, TSNEConfig
from engine.analysis.stats import compute_stats
from engine.analysis.structure import compute_structure
from engine.analysis.tsne import compute_tsne
from engine.attributes.config import AttributesConfig
from engine.attributes.stage import attributes
from engine.data.imagecache import open_cache, prepare
from engine.deps import DependencyError, bokeh_version, face_detector
from engine.explore.config import ExploreConfig
from engine.explore.page import explore
from engine.files import write_json_atomic
from engine.generation.compare import compare
from engine.generation.config import CompareConfig, FacemapConfig
from engine.generation.facemap import facemap
from engine.latents.store import open_latents
from engine.layout import cache_path, checkpoints_dir, latents_path
from engine.model.checkpoint import CheckpointError, UnsafeCheckpoint, nonfinite_weights, read_checkpoint
from engine.model.config import ModelConfig, TrainConfig
from engine.model.encode import encode
from engine.model.launch import launch, train_call
from engine.model.train import train
from engine.report.page import write_report
from engine.stages import STAGE_NAMES, TABLE

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = "synthetic:10000"
CLUSTER_STAGES = ("stats", "structure", "tsne")  # the stages --dask runs on a cluster
JUDGED = ("compare", "facemap")  # the stages whose images OpenCV's face detector judges
STAGES = STAGE_NAMES
STATE_FILE = "pipeline.json"


@dataclass(frozen=True)
class Profile:
    """The options of ``zspace run``; each default is read from the stage's config dataclass."""

    source: str = DEFAULT_SOURCE  # built-in synthetic faces: no download on a fresh machine
    size: int = ModelConfig.size
    model: str = ModelConfig.family  # ae | vae | rae
    beta: float = TrainConfig.beta  # vae
    z_reg: float = TrainConfig.z_reg  # rae
    z_dim: int = ModelConfig.z_dim
    epochs: int = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size
    k: int = StructureConfig.k
    tsne_n: int = TSNEConfig.n
    attributes_n: int = AttributesConfig.n
    attrs: str | None = None  # a label file for the attributes stage (default: the labels prepare kept)
    compare_n: int = CompareConfig.n
    facemap_n: int = FacemapConfig.n
    seed: int = 0


PROFILES = {
    "study": Profile(),
    # every stage and every figure, a few minutes on a 2-core CPU
    "quick": Profile(source="synthetic:3000", epochs=4, tsne_n=3000, compare_n=300, facemap_n=400),
}

# where a finished stage leaves its main output (a stage whose output is gone runs again)
OUTPUTS = {s.name: s.output for s in TABLE}


# what a stage rebuilt from scratch throws away (the later stages only overwrite their own folders)
DISCARDS = {"prepare": "images.zarr", "train": "checkpoints/ and train/", "encode": "latents.zarr"}


def _changes(old: dict, new: dict) -> str:
    diff = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(diff) or "an earlier stage changed"


def stage_options(p: Profile) -> dict[str, dict]:
    """The options each stage's result depends on (the device is not one of them)."""
    return {
        "prepare": {"source": p.source, "size": p.size},
        "train": {"epochs": p.epochs, "batch_size": p.batch_size, "z_dim": p.z_dim, "seed": p.seed,
                  **_family_options(p)},
        "encode": {},
        "stats": {},
        "structure": {"k": p.k, "seed": p.seed},
        "tsne": {"n": p.tsne_n, "seed": p.seed},
        "attributes": {"n": p.attributes_n, "seed": p.seed, **({"attrs": _file_key(p.attrs)} if p.attrs else {})},
        "compare": {"n": p.compare_n, "seed": p.seed},
        "facemap": {"n": p.facemap_n, "seed": p.seed},
        "report": {},
        "explore": {"seed": p.seed},
    }


def _family_options(p: Profile) -> dict:
    """The model family's options in the train stage's key; none for the plain ae, whose keys stay as they were."""
    options = {"ae": {}, "vae": {"model": "vae", "beta": p.beta}, "rae": {"model": "rae", "z_reg": p.z_reg}}
    if p.model not in options:
        raise ValueError(f"model must be one of {tuple(options)}, got {p.model!r}")
    return options[p.model]


def _file_key(path: str) -> dict:
    """A label file in a stage's key: its content's hash (an edited file reruns the stage, a moved one does not)."""
    f = Path(path)
    if not f.is_file():
        raise FileNotFoundError(f"--attrs {path}: no such file (CelebA's list_attr_celeba.txt or a CSV of labels)")
    return {"sha256": hashlib.sha256(f.read_bytes()).hexdigest()[:16]}


def stage_keys(p: Profile) -> dict[str, str]:
    keys, prev = {}, ""
    for name, opts in stage_options(p).items():
        prev = hashlib.sha256((prev + name + json.dumps(opts, sort_keys=True)).encode()).hexdigest()[:16]
        keys[name] = prev
    return keys


def _load_state(run: Path) -> dict:
    path = run / STATE_FILE
    if not path.exists():
        return {"stages": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        logger.warning("%s is unreadable; every stage will be checked again", path)
        return {"stages": {}}


def _save_state(run: Path, state: dict) -> None:
    write_json_atomic(run / STATE_FILE, state)  # an interrupt never leaves half a file


def _stage_call(name: str, run: Path, p: Profile, fresh: bool, device: str, progress: bool, nproc: int = 1,
                cluster=None):
    """Call stage ``name`` of the table with the profile's options; train and encode on ``nproc`` ranks, the
    analyses on ``cluster`` (Dask) when one is given."""
    if name == "prepare":
        return prepare(p.source, run, size=p.size, overwrite=fresh, progress=progress)
    if name == "train":
        cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, device=device, seed=p.seed, beta=p.beta, z_reg=p.z_reg)
        mcfg = ModelConfig(family=p.model, size=p.size, z_dim=p.z_dim)
        kwargs = {"resume": not fresh, "overwrite": fresh}
        if nproc > 1:
            return launch("train", train_call(cfg, mcfg, run_dir=str(run), progress=progress, **kwargs), nproc,
                          quiet=not progress)
        return train(run, cfg, mcfg, progress=progress, **kwargs)
    if name == "encode":
        if nproc > 1:
            return launch("encode", {"run_dir": str(run), "device": device, "progress": progress}, nproc,
                          quiet=not progress)
        return encode(run, device=device, progress=progress)
    if name == "stats":
        return compute_stats(run, progress=progress, cluster=cluster)
    if name == "structure":
        return compute_structure(run, StructureConfig(k=p.k, seed=p.seed, device=device), progress=progress,
                                 cluster=cluster)
    if name == "tsne":
        return compute_tsne(run, TSNEConfig(n=p.tsne_n, seed=p.seed), progress=progress, cluster=cluster)
    if name == "attributes":
        return attributes(run, attrs=p.attrs, config=AttributesConfig(n=p.attributes_n, seed=p.seed, device=device),
                          progress=progress)
    if name == "compare":
        return compare(run, n=p.compare_n, seed=p.seed, device=device, progress=progress)
    if name == "facemap":
        return facemap(run, n=p.facemap_n, seed=p.seed, device=device, progress=progress)
    if name == "report":
        return write_report(run)
    if name == "explore":
        res = explore(run, ExploreConfig(seed=p.seed, device=device), progress=progress)
        write_report(run)  # its top now links to the page
        return res
    raise ValueError(f"unknown stage {name!r}; stages: {STAGE_NAMES}")


def profile_for(quick: bool = False, **overrides) -> Profile:
    """The study's or the quick profile with ``overrides`` (None values ignored)."""
    base = PROFILES["quick" if quick else "study"]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def run(
    run_dir: str | os.PathLike,
    source: str | None = None,
    quick: bool = False,
    device: str = "auto",
    progress: bool = True,
    until: str | None = None,
    nproc: int = 1,
    dask: str | None = None,
    **overrides,
) -> dict:
    """Run every stage (up to ``until``) into ``run_dir``; returns timings and where the report is.

    ``nproc``: ranks of train and encode (torchrun on this machine; not part of a stage's key).
    ``dask``: ``--dask`` ADDRESS or local:N for stats, structure and tsne (started only if one of them runs).

    ``overrides``: any :class:`Profile` field (model, beta, z_reg, epochs, size, z_dim, batch_size, k,
    tsne_n, attributes_n, attrs, compare_n, facemap_n, seed); None keeps the profile's value.
    """
    if until is not None and until not in STAGES:
        raise ValueError(f"until must be one of {STAGES}, got {until!r}")
    p = profile_for(quick, source=source, **overrides)
    run = Path(run_dir)
    keys = stage_keys(p)  # before anything is written: a missing --attrs file is named first
    run.mkdir(parents=True, exist_ok=True)
    options = stage_options(p)
    state = _load_state(run)
    done = state.setdefault("stages", {})
    state["profile"] = asdict(p)
    timings: dict[str, float | str] = {}
    stages = STAGES[: STAGES.index(until) + 1] if until else STAGES
    def finished(name: str) -> bool:
        rec = done.get(name) or {}
        return rec.get("key") == keys[name] and bool(rec.get("finished")) and (run / OUTPUTS[name]).exists()

    if any(name in JUDGED and not finished(name) for name in stages):
        face_detector()  # before the first stage, not after the training: one line what to install
    no_explore = None
    if "explore" in stages and not finished("explore"):
        try:
            bokeh_version()
        except DependencyError as exc:  # an optional extra: every other stage runs, this one waits for it
            no_explore = str(exc)
            logger.warning("%s; the explore stage will be left for a later run", no_explore)
    cluster = None
    with contextlib.ExitStack() as stack:  # a --dask cluster lives until the last stage
        for i, name in enumerate(stages, 1):
            rec = done.get(name)
            same = rec is not None and rec.get("key") == keys[name]
            if name == "explore" and no_explore:
                timings[name] = "not run: " + no_explore.rsplit(": ", 1)[-1]
                logger.info("[%d/%d] %-9s not run: %s", i, len(stages), name, no_explore)
                continue
            if finished(name):
                timings[name] = "skipped"
                logger.info("[%d/%d] %-9s finished earlier with the same options: skipped", i, len(stages), name)
                continue
            # started or finished with other options or inputs: start over; a fresh start that was interrupted
            # stays fresh until it finishes (its replacement is under way beside the old data)
            fresh = rec is not None and (not same or bool(rec.get("fresh")))
            why = ("options or inputs changed: running again" if fresh else "resuming" if same else "running")
            logger.info("[%d/%d] %-9s %s %s", i, len(stages), name, why, options[name] or "")
            if fresh and name in DISCARDS and (run / OUTPUTS[name]).exists():
                logger.warning("%s: options or inputs changed (%s): discarding %s and building it again", name,
                               _changes(rec.get("options") or {}, options[name]), DISCARDS[name])
            done[name] = {"key": keys[name], "options": options[name], "finished": None, "fresh": fresh}
            _save_state(run, state)
            t0 = time.perf_counter()
            if dask and name in CLUSTER_STAGES and cluster is None:
                cluster = stack.enter_context(open_cluster(dask, progress))
            _stage_call(name, run, p, fresh, device, progress, nproc, cluster)
            timings[name] = round(time.perf_counter() - t0, 2)
            done[name] = {"key": keys[name], "options": options[name], "seconds": timings[name],
                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            _save_state(run, state)
            logger.info("[%d/%d] %-9s done in %.1f s", i, len(stages), name, timings[name])
    report = run / "report" / "index.html"
    return {"run": str(run), "seconds": timings, "report": str(report) if report.exists() else None}


def _check(label: str, fn) -> dict:
    """Run one check: {"what", "ok", "problem"}; a check raising a zspace error is a finding, not a crash. A
    checkpoint that would run code is no finding: ``UnsafeCheckpoint`` ends the verify, as it ends every verb."""
    try:
        detail = fn()
        return {"what": label, "ok": True, "detail": detail}
    except UnsafeCheckpoint:
        raise
    except (ValueError, FileNotFoundError, KeyError) as exc:
        return {"what": label, "ok": False, "problem": str(exc)}


def _check_checkpoint(path: Path) -> str:
    ckpt = read_checkpoint(path)
    bad = nonfinite_weights(ckpt["model"])
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights ({bad[0]}...): retrain with 'zspace train --overwrite'")
    return f"epoch {ckpt['epoch']}"


def _check_json(path: Path, rebuild: str) -> str:
    try:
        json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rebuild it with '{rebuild}'") from None
    return "valid JSON"


def verify(run_dir: str | os.PathLike) -> dict:
    """Check every store, checkpoint and stage output of ``run_dir``; say what is damaged and what rebuilds it.

    Returns {"run", "ok", "checks": [{"what", "ok", "detail" | "problem"}]}; absent outputs of
    stages that never ran are not damage and are not listed.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist")
    checks = []
    if cache_path(run).exists():
        checks.append(_check("images.zarr", lambda: f"{open_cache(run)['images'].shape[0]} images, every chunk present"))
    for name in ("last.pt", "best.pt"):
        path = checkpoints_dir(run) / name
        if path.exists():
            checks.append(_check(f"checkpoints/{name}", lambda path=path: _check_checkpoint(path)))
    if latents_path(run).exists():
        checks.append(_check("latents.zarr", lambda: "z {} every chunk present".format(open_latents(run)["z"].shape)))
    for stage in TABLE:
        out = stage.output_path(run)
        if out.suffix == ".json" and ".zarr" not in stage.output and out.exists():
            checks.append(_check(stage.output, lambda out=out, stage=stage: _check_json(out, stage.command(run))))
    ok = all(c["ok"] for c in checks)
    return {"run": str(run), "ok": ok, "checks": checks}
