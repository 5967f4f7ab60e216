"""zspace command line: parse arguments, configure logging, call one engine function per verb."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

# Before numpy loads: OpenBLAS's threads otherwise spin ~0.1 s after every call, and the numba kernels that
# follow an sgemm (the kNN self-join's merge) run at half speed beside them. See kernels/selfjoin.py.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

# light modules only (dataclasses, the stage table): `zspace --help` never imports torch
from engine.analysis.config import TSNE_AFFINITIES, StatsConfig, StructureConfig, TSNEConfig
from engine.attributes.config import AttributesConfig
from engine.data.config import PrepareConfig
from engine.explore.config import MAX_THUMB, ExploreConfig
from engine.files import run_lock
from engine.generation.config import ALL_SAMPLERS, SAMPLERS, CompareConfig, FacemapConfig, GenerateConfig, PathsConfig
from engine.model.config import FAMILIES, FAMILY_TERMS, LOSSES, RANK_TIMEOUT_S, EncodeConfig, ModelConfig, RankFailed, TrainConfig
from engine.stages import STAGE_NAMES, STAGES

RANKED = ("train", "encode")  # the verbs that run on several ranks (--nproc, torchrun)
# verbs that write RUN: one process at a time per run directory
WRITERS = {"prepare", "train", "encode", "import-latents", "stats", "structure", "tsne", "attributes", "generate",
           "paths", "compare", "facemap", "report", "explore", "run"}


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _index_pair(text: str) -> tuple[int, int]:
    try:
        a, b = (int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two integers separated by a comma, like 3,7; got {text!r}") from None
    return a, b


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 32,64,64,64, got {text!r}") from None


def cmd_prepare(args) -> dict:
    from engine.data.imagecache import prepare

    return prepare(args.source, args.run, size=args.size, limit=args.limit, workers=args.workers,
                   overwrite=args.overwrite, progress=not args.quiet)


def _rank_env() -> int | None:
    """This process's rank when torchrun started it, else None."""
    return int(os.environ["RANK"]) if "RANK" in os.environ and "WORLD_SIZE" in os.environ else None


def _on_ranks(verb: str, call: dict, args):
    """``verb`` on ``--nproc`` ranks of this machine (torchrun's standalone launcher)."""
    from engine.model.launch import launch

    if _rank_env() is not None:
        raise ValueError("--nproc inside a torchrun job: torchrun already started the ranks; drop --nproc")
    return launch(verb, call, args.nproc, quiet=args.quiet)


def _family_args(sp) -> None:
    """--model, --beta, --z-reg, --decoder-l2: the model family and its latent terms (train and run)."""
    sp.add_argument("--model", choices=FAMILIES, default=None,
                    help="model family: ae (the study's plain autoencoder, default), vae (variational), rae "
                         "(regularised, Ghosh et al. 2020); one encoder/decoder architecture")
    sp.add_argument("--beta", type=_non_negative, default=None,
                    help=f"vae: weight of the KL term (default {TrainConfig.beta:g}: the ELBO)")
    sp.add_argument("--z-reg", type=_non_negative, default=None,
                    help=f"rae: weight of |z|^2/2 (default {TrainConfig.z_reg:g})")
    sp.add_argument("--decoder-l2", type=_non_negative, default=None,
                    help=f"rae: L2 penalty on the decoder's weights (default {TrainConfig.decoder_l2:g})")


def cmd_train(args) -> dict:
    from engine.data.imagecache import open_cache

    family = args.model
    terms = {"beta": args.beta, "z_reg": args.z_reg, "decoder_l2": args.decoder_l2}
    last = Path(args.run) / "checkpoints" / "last.pt"
    if args.resume and last.exists():  # the family and loss weights of the training to resume
        from engine.model.checkpoint import read_checkpoint

        config = read_checkpoint(last)["config"]
        saved = config["model"].get("family", "ae")
        if family not in (None, saved):
            raise ValueError(f"{last} is of family {saved}: --resume continues it as that (--model {saved}); "
                             f"start over as {family} with --overwrite")
        family = saved
        terms = {k: config["train"].get(k) if v is None and k in FAMILY_TERMS[family] else v for k, v in terms.items()}
    family = family or ModelConfig.family
    stray = [k for k, v in terms.items() if v is not None and k not in FAMILY_TERMS[family]]
    if stray:
        raise ValueError(f"{', '.join('--' + k.replace('_', '-') for k in stray)} applies to --model "
                         f"{' and '.join(f for f, t in FAMILY_TERMS.items() if stray[0] in t)} only, and the family "
                         f"here is {family}")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss,
                      precision=args.precision, device=args.device, seed=args.seed,
                      **{k: v for k, v in terms.items() if v is not None})
    model_cfg = None
    if args.z_dim is not None or args.widths is not None or not args.resume:
        size = int(open_cache(args.run).attrs["size"])
        model_cfg = ModelConfig(family=family, size=size, z_dim=args.z_dim or ModelConfig.z_dim,
                                widths=args.widths or ModelConfig().widths)
    kwargs = {"resume": args.resume, "overwrite": args.overwrite, "progress": not args.quiet,
              "rank_timeout": args.rank_timeout}
    if args.nproc > 1:
        from engine.model.launch import train_call

        if args.batch_size % args.nproc:
            raise ValueError(f"--batch-size {args.batch_size} does not split over {args.nproc} ranks: pass a multiple "
                             f"of {args.nproc} (it is the global batch; each rank takes batch-size / ranks)")

        return _on_ranks("train", train_call(cfg, model_cfg, run_dir=str(args.run), **kwargs), args)
    from engine.model.train import train

    return train(args.run, cfg, model_cfg, **kwargs)


def cmd_encode(args) -> dict:
    kwargs = {"run_dir": str(args.run), "checkpoint": args.checkpoint, "batch_size": args.batch_size,
              "device": args.device, "precision": args.precision, "progress": not args.quiet,
              "overwrite": args.overwrite, "rank_timeout": args.rank_timeout}
    if args.nproc > 1:
        attrs = _on_ranks("encode", kwargs, args)
    else:
        from engine.model.encode import encode

        attrs = encode(**kwargs)
    return {k: attrs[k] for k in ("n", "z_dim", "checkpoint", "checkpoint_sha256", "seconds", "images_per_second") if k in attrs}


def cmd_run(args) -> None:
    from engine.pipeline import run

    family = args.model or ModelConfig.family
    stray = [f"--{k.replace('_', '-')}" for k in ("beta", "z_reg") if getattr(args, k) is not None
             and k not in FAMILY_TERMS[family]]
    if stray:
        raise ValueError(f"{stray[0]} applies to --model {'vae' if stray[0] == '--beta' else 'rae'} only, and the "
                         f"family here is {family}")

    res = run(args.run, source=args.source, quick=args.quick, device=args.device, progress=not args.quiet,
              model=args.model, beta=args.beta, z_reg=args.z_reg,
              until=args.until, nproc=args.nproc, dask=args.dask, epochs=args.epochs, size=args.size, z_dim=args.z_dim, batch_size=args.batch_size,
              k=args.k, tsne_n=args.tsne_n, attrs=args.attrs, compare_n=args.compare_n, facemap_n=args.facemap_n, seed=args.seed)
    print(f"\nzspace run --run {args.run}")
    for stage, secs in res["seconds"].items():
        print(f"  {stage:<10} {secs if isinstance(secs, str) else f'{secs:8.1f} s'}")
    if res["report"]:
        print(f"report: {res['report']}  (open it in a browser; the folder {Path(res['report']).parent} is self-contained)")
    page = Path(args.run) / "explore" / "index.html"
    if page.exists():
        print(f"explore: {page}  (every point; opens from disk, no server)")


def cmd_verify(args) -> int:
    from engine.pipeline import verify

    res = verify(args.run)
    for c in res["checks"]:
        print(f"{'ok' if c['ok'] else 'DAMAGED':8} {c['what']:26} {c.get('detail') or c.get('problem')}")
    if not res["checks"]:
        print(f"{args.run}: nothing to verify yet (no store, checkpoint or stage output)")
    return 0 if res["ok"] else 1


def cmd_contrast(args) -> dict:
    from engine.contrast.page import contrast

    res = contrast(args.runs, args.out)
    return {"holds": len(res["holds"]), "differs": res["differs"], "page": str(Path(args.out) / "index.html")}


def cmd_report(args) -> dict:
    from engine.report.page import write_report

    return write_report(args.run)


def cmd_explore(args) -> dict:
    from engine.explore.page import explore

    cfg = ExploreConfig(n=args.n, thumb=args.thumb, pcs=args.pcs, draw=args.draw, seed=args.seed, device=args.device)
    res = explore(args.run, cfg, progress=not args.quiet)
    return {"page": res["page"], "points": res["n"], "all_points": res["all_points"], "colours": res["colours"],
            "megabytes": round(res["total_bytes"] / 1e6, 1), "seconds": res["seconds"], "missing": res["missing"]}


def cmd_bench(args) -> dict:
    from bench.harness import default_out_dir, run_bench, run_scaling_command

    if args.scaling:
        out = Path(args.out) if args.out else default_out_dir(args.small)
        res = run_scaling_command(args.small, out, args.threads)
        return {"points": len(res["points"]), "scaling": str(out / "SCALING.md"),
                "figure": str(out / "figures" / "scaling.png"), "machine": res["machine"]["cpu"]}
    kwargs = {"out_dir": Path(args.out)} if args.out else {}
    res = run_bench(small=args.small, only=args.only.split(",") if args.only else None, data=args.data,
                    threads=args.threads, **kwargs)
    return {"rows": len(res["rows"]), "machine": res["machine"]["cpu"], "threads": res["threads"]}


def cmd_import_latents(args) -> dict:
    from engine.latents.importer import import_latents

    attrs = import_latents(args.file, args.run, drop_nonfinite=args.drop_nonfinite, overwrite=args.overwrite,
                           progress=not args.quiet)
    return {k: attrs[k] for k in ("n", "z_dim", "dropped_nonfinite", "source")}


def _cluster(args):
    """The Dask cluster of ``--dask`` for the duration of the verb (a null context without it)."""
    from engine.analysis.cluster import open_cluster

    return open_cluster(args.dask, progress=not args.quiet)


def cmd_stats(args) -> dict:
    from engine.analysis.stats import compute_stats

    with _cluster(args) as cluster:
        res = compute_stats(args.run, StatsConfig(bin_width=args.bin_width, write_pca=not args.no_pca),
                            progress=not args.quiet, cluster=cluster)
    return {
        "stats": str(STAGES["stats"].output_path(args.run)),
        "n": res["n"], "d": res["d"], "dominant": res["dominant"],
        "radius": {k: round(res["radius"][k], 3) for k in ("peak", "mean", "expected", "sqrt_d")},
        "top_pairs": res["correlation"]["top_pairs"][:5],
        "pca": {k: v for k, v in res["pca"].items() if k.startswith("n_components")},
        "normality": {k: {"ks_distance": round(v["ks_distance"], 4),
                          "shares": [round(e["share"], 4) for e in v["ellipsoids"]]}
                      for k, v in res["normality"].items() if isinstance(v, dict)},
        "figures": res["figures"], "seconds": round(res["seconds"], 2),
    }


def cmd_structure(args) -> dict:
    from engine.analysis.structure import compute_structure

    if args.tiles != StructureConfig.tiles and not args.dask:
        raise ValueError(f"--tiles {args.tiles} applies to the graph on a Dask cluster: add --dask ADDRESS|local:N")
    cfg = StructureConfig(k=args.k, graph_k=max(args.k, args.graph_k), index=args.index, sample=args.sample,
                          seed=args.seed, tiles=args.tiles, device=args.device)
    with _cluster(args) as cluster:
        res = compute_structure(args.run, cfg, progress=not args.quiet, cluster=cluster)
    return {
        "structure": str(STAGES["structure"].output_path(args.run)),
        "n": res["n"], "k": res["k"], "index": res["index"], "recall_at_k": res["recall_at_k"],
        "verdicts": [s["verdict"] for s in res["statistics"].values()],
        "figures": res["figures"], "seconds": {k: round(v, 2) for k, v in res["seconds"].items()},
    }


def cmd_tsne(args) -> dict:
    from engine.analysis.tsne import compute_tsne

    cfg = TSNEConfig(n=args.n, pca=args.pca, perplexity=args.perplexity, early_exaggeration=args.early_exaggeration,
                     n_iter=args.n_iter, seed=args.seed, null=not args.no_null, affinity=args.affinity,
                     uniform_k=args.uniform_k, fit_n=args.fit_n)
    with _cluster(args) as cluster:
        res = compute_tsne(args.run, cfg, progress=not args.quiet, cluster=cluster)
    return {k: res[k] for k in ("n", "seconds", "kl_divergence", "neighbours_kept_15") if k in res} | {
        "embedding": str(Path(args.run) / "tsne" / "embedding.npz"), "figure": str(Path(args.run) / "tsne" / "tsne.png")}


def cmd_generate(args) -> dict:
    from engine.generation.generate import generate

    info = generate(args.run, args.sampler, n=args.n, seed=args.seed, device=args.device)
    return {**info, "grid": str(Path(args.run) / "generate" / args.sampler / "grid.png")}


def cmd_paths(args) -> dict:
    from engine.generation.paths import run_paths

    between = tuple(args.between.split(",")) if args.between else None
    if between is not None and len(between) != 2:
        raise ValueError(f"--between takes two image ids separated by a comma, got {args.between!r}")
    return run_paths(args.run, angle=args.angle, length=args.length, steps=args.steps, between=between,
                     extend=args.extend, device=args.device, axes=args.axes, pcs=args.pcs)


def cmd_compare(args) -> dict:
    from engine.generation.compare import compare

    res = compare(args.run, n=args.n, seed=args.seed, device=args.device, progress=not args.quiet)
    out = Path(args.run) / "generate"
    return {"samplers": {k: {m: v[m] for m in ("face_rate", "face_rate_ci", "consistency", "nn_distance_ratio",
                                                 "sharpness_ratio")} for k, v in res["samplers"].items()},
            "paths": {k: v["along"] for k, v in res["paths"].items()}, "seconds": res["seconds"],
            "json": str(out / "compare.json"), "table": str(out / "compare.md"), "figure": str(out / "compare.png")}


def cmd_facemap(args) -> dict:
    from engine.generation.facemap import facemap

    res = facemap(args.run, n=args.n, seed=args.seed, device=args.device, progress=not args.quiet)
    v = res["verdict"]
    print(v["sentence"], file=sys.stderr)
    if "quality" in v:
        print(v["quality"]["sentence"], file=sys.stderr)
    out = Path(args.run) / "facemap"
    return {"explains": v["explains"], "voids_matter": v["voids_matter"], "region_matters": v["region_matters"],
            "region_ends": v["region_ends"], "probes": res["n_probes"], "seconds": res["seconds"],
            "json": str(out / "facemap.json"), "figures": {k: str(out / f) for k, f in res["figures"].items()}}


def cmd_attributes(args) -> dict:
    from engine.attributes.stage import attributes

    res = attributes(args.run, attrs=args.attrs, progress=not args.quiet, n=args.n, seed=args.seed, device=args.device)
    out = Path(args.run) / "attributes"
    if "no_labels" in res:
        print(f"attributes: skipped, {res['no_labels']}", file=sys.stderr)
        return {"no_labels": res["no_labels"], "json": str(out / "attributes.json")}
    return {"attributes": {a: round(r["readout"]["auc"], 4) for a, r in res["attributes"].items()},
            "carried_by_dominant": res["carried_by_dominant"], "judged_changes": res["judged_changes"],
            "skipped": res["skipped"], "seconds": res["seconds"], "json": str(out / "attributes.json")}


def cmd_judge(args) -> dict:
    from engine.generation.judge import judge_path

    return judge_path(args.images, size=args.size)


def _verb_adder(sub):
    def verb(name, func, help):
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--run", required=True, metavar="DIR", help="run directory (created when missing)")
        sp.set_defaults(func=func)
        return sp
    return verb


def _ranks_args(sp) -> None:
    sp.add_argument("--nproc", type=_positive_int, default=1,
                    help="ranks on this machine, started by torchrun's standalone launcher (default 1: this process); "
                         "one GPU per rank on CUDA (nccl), CPU ranks otherwise (gloo). Across machines run "
                         "'torchrun ... --no-python zspace VERB ...' instead (README)")
    sp.add_argument("--rank-timeout", type=float, default=RANK_TIMEOUT_S, metavar="SECONDS",
                    help=f"with several ranks: a rank waiting longer than this for a lost one fails "
                         f"(default {RANK_TIMEOUT_S:g})")


def _dask_arg(sp) -> None:
    sp.add_argument("--dask", default=None, metavar="ADDRESS|local:N",
                    help="run the row blocks as tasks on a Dask cluster: a scheduler's address (tcp://host:8786) or "
                         "local:N worker processes started for this command; the run directory must be on storage "
                         "every worker reads (needs pip install -e '.[dask]')")


def _data_and_model_verbs(verb) -> None:
    sp = verb("prepare", cmd_prepare, STAGES["prepare"].summary)
    sp.add_argument("source", metavar="SOURCE", help="CelebA root, image folder, or synthetic:N[:SEED]")
    sp.add_argument("--size", type=_positive_int, default=PrepareConfig.size, help=f"output side in pixels, multiple of 16 (default {PrepareConfig.size})")
    sp.add_argument("--limit", type=_positive_int, default=None, help="keep N images spread over the listing")
    sp.add_argument("--workers", type=_positive_int, default=None, help="decode processes (default: all cores)")
    sp.add_argument("--overwrite", action="store_true", help="rebuild a cache made from another source or size")

    sp = verb("train", cmd_train, STAGES["train"].summary)
    sp.add_argument("--epochs", type=_positive_int, default=TrainConfig.epochs, help=f"total epochs (default {TrainConfig.epochs}, as in the study)")
    sp.add_argument("--batch-size", type=_positive_int, default=TrainConfig.batch_size,
                    help=f"images per optimisation step over all ranks, the global batch (default "
                         f"{TrainConfig.batch_size}); with N ranks each takes batch-size / N, so it must divide")
    sp.add_argument("--lr", type=float, default=TrainConfig.lr, help=f"Adam learning rate (default {TrainConfig.lr:g})")
    sp.add_argument("--z-dim", type=_positive_int, default=None, help=f"latent dimension (default {ModelConfig.z_dim})")
    sp.add_argument("--widths", type=_widths, default=None, help=f"conv channels of the 4 encoder layers (default {','.join(map(str, ModelConfig().widths))})")
    _family_args(sp)
    sp.add_argument("--loss", choices=LOSSES, default=TrainConfig.loss)
    sp.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=TrainConfig.precision,
                    help="auto: bf16 (or fp16 + GradScaler) autocast on CUDA, fp32 on CPU")
    sp.add_argument("--device", default=TrainConfig.device, help="auto, cpu, cuda or cuda:N")
    sp.add_argument("--seed", type=int, default=TrainConfig.seed)
    sp.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.pt (with any --nproc)")
    sp.add_argument("--overwrite", action="store_true", help="discard existing checkpoints and start over")
    _ranks_args(sp)

    sp = verb("encode", cmd_encode, STAGES["encode"].summary)
    sp.add_argument("--checkpoint", default=EncodeConfig.checkpoint, help="default RUN/checkpoints/best.pt (else last.pt)")
    sp.add_argument("--batch-size", type=_positive_int, default=EncodeConfig.batch_size, help="default 64 on CPU, 1024 on CUDA")
    sp.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=EncodeConfig.precision)
    sp.add_argument("--overwrite", action="store_true", help="replace latents brought in with import-latents")
    sp.add_argument("--device", default=EncodeConfig.device)
    _ranks_args(sp)
    sp = verb("import-latents", cmd_import_latents, "bring your own (N, D) latents: .npy, .npz or .zarr -> RUN/latents.zarr")
    sp.add_argument("file", metavar="FILE", help=".npy, .npz (array 'z' or the first) or Zarr array/group with 'z'")
    sp.add_argument("--drop-nonfinite", action="store_true", help="drop and count rows with NaN/inf instead of failing")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing RUN/latents.zarr")


def _analysis_verbs(verb) -> None:
    sp = verb("stats", cmd_stats, STAGES["stats"].summary)
    sp.add_argument("--bin-width", type=float, default=StatsConfig.bin_width,
                    help=f"number-density bin width (default {StatsConfig.bin_width:g}, as in the study)")
    sp.add_argument("--no-pca", action="store_true", help="do not write PCA coordinates into latents.zarr")
    _dask_arg(sp)

    sp = verb("structure", cmd_structure, STAGES["structure"].summary)
    sp.add_argument("--k", type=_positive_int, default=StructureConfig.k, help=f"neighbours per point (default {StructureConfig.k})")
    sp.add_argument("--graph-k", type=_positive_int, default=StructureConfig.graph_k,
                    help=f"neighbours per point kept in latents.zarr (default {StructureConfig.graph_k}): 'zspace tsne' "
                         f"of all points reuses the exact graph up to perplexity graph-k / 3")
    sp.add_argument("--index", choices=("exact", "hnsw", "ivf"), default=StructureConfig.index,
                    help="exact (default: the self-join kernel, each pair once) or a FAISS approximate index "
                         "with measured recall")
    sp.add_argument("--sample", type=_positive_int, default=None, help="analyse N randomly chosen points (default all)")
    sp.add_argument("--seed", type=int, default=StructureConfig.seed)
    _dask_arg(sp)
    sp.add_argument("--tiles", choices=("join", "faiss"), default=StructureConfig.tiles,
                    help="with --dask, how each tile of the exact graph is searched: join (default: zspace's self- and "
                         "cross-join kernels, each pair once) or faiss (faiss.knn of every query block x base block)")
    sp.add_argument("--device", default=StructureConfig.device,
                    help="auto (default: CUDA when present), cpu, cuda or cuda:N: on CUDA the exact graph, void probes "
                         "and local PCA run as blocked fp32 torch on the GPU; on a CPU the numba kernels")

    sp = verb("tsne", cmd_tsne, STAGES["tsne"].summary)
    sp.add_argument("--n", type=_positive_int, default=TSNEConfig.n, help=f"points embedded (default {TSNEConfig.n:,}, as in the study)")
    sp.add_argument("--pca", type=_positive_int, default=None, help="project onto the first K principal components first")
    sp.add_argument("--perplexity", type=float, default=TSNEConfig.perplexity,
                    help=f"default {TSNEConfig.perplexity:g} (the study used 10 at 20,000 points)")
    sp.add_argument("--affinity", choices=TSNE_AFFINITIES, default=TSNEConfig.affinity,
                    help="perplexity-calibrated Gaussians (default) or uniform weights on --uniform-k neighbours "
                         "(a sparser P: faster, another map)")
    sp.add_argument("--uniform-k", type=_positive_int, default=TSNEConfig.uniform_k,
                    help=f"neighbours per point of --affinity uniform (default {TSNEConfig.uniform_k})")
    sp.add_argument("--early-exaggeration", type=float, default=TSNEConfig.early_exaggeration,
                    help=f"default {TSNEConfig.early_exaggeration:g} (the study used 16)")
    sp.add_argument("--n-iter", type=_positive_int, default=TSNEConfig.n_iter,
                    help=f"total iterations (default {TSNEConfig.n_iter}), the first 250 exaggerated")
    sp.add_argument("--seed", type=int, default=TSNEConfig.seed)
    sp.add_argument("--no-null", action="store_true", help="skip the null model's embedding")
    sp.add_argument("--fit-n", type=_positive_int, default=TSNEConfig.fit_n,
                    help=f"with --dask: a map of more points is fitted on this many (default {TSNEConfig.fit_n:,}) "
                         f"and the others are placed into it (openTSNE transform) as Dask tasks")
    _dask_arg(sp)


def _generation_verbs(verb, sub) -> None:
    sp = verb("generate", cmd_generate, "draw z-points from a sampler fitted to the cloud and decode them -> RUN/generate/NAME/")
    sp.add_argument("--sampler", required=True,
                    choices=ALL_SAMPLERS)
    sp.add_argument("--n", type=_positive_int, default=GenerateConfig.n, help=f"z-points to draw (default {GenerateConfig.n})")
    sp.add_argument("--seed", type=int, default=GenerateConfig.seed)
    sp.add_argument("--device", default=GenerateConfig.device)

    sp = verb("paths", cmd_paths, "decode z-points on paths through the cloud -> RUN/generate/paths/")
    sp.add_argument("--angle", type=float, default=PathsConfig.angle, help="rotation of the in-plane segments, degrees")
    sp.add_argument("--length", type=float, default=PathsConfig.length, help="segment length in units of the spread along it")
    sp.add_argument("--steps", type=_positive_int, default=PathsConfig.steps, help="points per segment (odd: the centre is one)")
    sp.add_argument("--between", default=None, metavar="ID_A,ID_B", help="also interpolate between two images' latents")
    sp.add_argument("--extend", type=float, default=PathsConfig.extend, help="extend the interpolation beyond both ends")
    sp.add_argument("--axes", type=_index_pair, action="append", metavar="I,J",
                    help="a segment in the plane of components I and J (0-based; repeatable; "
                         "default: the two most dominant components)")
    sp.add_argument("--pcs", type=_index_pair, action="append", metavar="P,Q",
                    help="a segment in the plane of principal axes P and Q (1-based, PC1 first; repeatable; default 1,2)")
    sp.add_argument("--device", default=PathsConfig.device)

    sp = verb("attributes", cmd_attributes, STAGES["attributes"].summary)
    sp.add_argument("--attrs", metavar="FILE", help="labels: CelebA's list_attr_celeba.txt or a CSV with a file-name "
                    "column (default: those prepare kept in images.zarr)")
    sp.add_argument("--n", type=_positive_int, default=AttributesConfig.n,
                    help=f"labelled train-split latents in the readouts (default {AttributesConfig.n:,})")
    sp.add_argument("--seed", type=int, default=AttributesConfig.seed)
    sp.add_argument("--device", default=AttributesConfig.device)

    sp = verb("compare", cmd_compare, STAGES["compare"].summary)
    sp.add_argument("--n", type=_positive_int, default=CompareConfig.n, help=f"z-points per sampler (default {CompareConfig.n:,})")
    sp.add_argument("--seed", type=int, default=CompareConfig.seed)
    sp.add_argument("--device", default=CompareConfig.device)

    sp = verb("facemap", cmd_facemap, STAGES["facemap"].summary)
    sp.add_argument("--n", type=_positive_int, default=FacemapConfig.n,
                    help=f"z-points per probe family (default {FacemapConfig.n:,}); six families are decoded")
    sp.add_argument("--seed", type=int, default=FacemapConfig.seed)
    sp.add_argument("--device", default=FacemapConfig.device)

    sp = sub.add_parser("judge", help="face rate (OpenCV Haar cascade) and sharpness of a folder of images or an .npy/.npz",
                        description="face rate (OpenCV Haar cascade, fixed settings) with a 95% Wilson interval, and sharpness")
    sp.add_argument("images", metavar="IMAGES", help="folder of PNG/JPEG images, an image, or an .npy/.npz array (N,S,S,3)")
    sp.add_argument("--size", type=_positive_int, default=PrepareConfig.size,
                    help=f"images are judged at this side (default {PrepareConfig.size})")
    sp.set_defaults(func=cmd_judge)


def _run_verbs(verb, sub) -> None:
    sp = verb("run", cmd_run, "the main job: prepare, train, encode, stats, structure, tsne, attributes, compare, "
                              "facemap, report, explore; "
                              "finished stages are skipped, changed ones rerun")
    sp.add_argument("source", metavar="SOURCE", nargs="?", default=None,
                    help="as for prepare (default: the built-in synthetic:10000, or synthetic:3000 with --quick)")
    sp.add_argument("--quick", action="store_true", help="small profile: every figure in a few minutes on a laptop CPU")
    sp.add_argument("--until", choices=STAGE_NAMES, default=None, help="stop after this stage")
    sp.add_argument("--epochs", type=_positive_int, default=None, help="training epochs (study 24, quick 4)")
    sp.add_argument("--model", choices=FAMILIES, default=None, help="model family: ae (default), vae or rae")
    sp.add_argument("--beta", type=_non_negative, default=None, help=f"vae: KL weight (default {TrainConfig.beta:g})")
    sp.add_argument("--z-reg", type=_non_negative, default=None, help=f"rae: |z|^2/2 weight (default {TrainConfig.z_reg:g})")
    sp.add_argument("--size", type=_positive_int, default=None, help="image side, multiple of 16 (default 96)")
    sp.add_argument("--z-dim", type=_positive_int, default=None, help=f"latent dimension (default {ModelConfig.z_dim})")
    sp.add_argument("--batch-size", type=_positive_int, default=None, help="training batch (default 64)")
    sp.add_argument("--k", type=_positive_int, default=None, help="neighbours per point in structure (default 16)")
    sp.add_argument("--tsne-n", type=_positive_int, default=None, help="points in the t-SNE map (study 20,000, quick 3,000)")
    sp.add_argument("--attrs", metavar="FILE", default=None,
                    help="attribute labels for the attributes stage: CelebA's list_attr_celeba.txt or a CSV with a "
                         "file-name column (default: those prepare found in the CelebA root)")
    sp.add_argument("--compare-n", type=_positive_int, default=None, help="z-points per sampler (study 1,000, quick 300)")
    sp.add_argument("--facemap-n", type=_positive_int, default=None,
                    help="z-points per face-map probe family (study 4,000, quick 400)")
    sp.add_argument("--seed", type=int, default=None, help="seed of every stage (default 0)")
    sp.add_argument("--device", default=TrainConfig.device)
    sp.add_argument("--nproc", type=_positive_int, default=1,
                    help="ranks of train and encode on this machine (torchrun's standalone launcher; default 1)")
    _dask_arg(sp)

    sp = verb("report", cmd_report, STAGES["report"].summary)
    sp = verb("explore", cmd_explore, STAGES["explore"].summary)
    sp.add_argument("--n", type=_positive_int, default=None,
                    help="points on the map (default: every point of the t-SNE map, else every latent)")
    sp.add_argument("--thumb", type=_positive_int, default=ExploreConfig.thumb,
                    help=f"thumbnail side in pixels, at most {MAX_THUMB} (default {ExploreConfig.thumb})")
    sp.add_argument("--pcs", type=_positive_int, default=ExploreConfig.pcs,
                    help=f"principal axes the page can plot against each other (default {ExploreConfig.pcs})")
    sp.add_argument("--draw", type=int, default=ExploreConfig.draw,
                    help=f"points drawn at once, a uniform sample of those in view; all of them once the view holds "
                         f"no more (default {ExploreConfig.draw:,}; 0: every point at every zoom, for a GPU)")
    sp.add_argument("--seed", type=int, default=ExploreConfig.seed, help="seed of the null model's draws")
    sp.add_argument("--device", default=ExploreConfig.device, help="where the reconstructions are decoded")
    sp = verb("verify", cmd_verify, "check every store, checkpoint and output of RUN; say what is damaged and what "
                                    "rebuilds it (exit 1 when something is)")

    sp = sub.add_parser("contrast", help="several runs side by side: what holds in every run, what differs -> "
                                         "OUT/index.html, contrast.md, contrast.json",
                        description="the headline numbers of every run side by side, each row judged 'holds' (in "
                                    "every run) or 'differs' by a rule fixed before the numbers, and the runs' "
                                    "figures side by side")
    sp.add_argument("runs", nargs="+", metavar="RUN", help="two or more run directories")
    sp.add_argument("--out", required=True, metavar="DIR", help="where index.html, contrast.md and contrast.json go")
    sp.set_defaults(func=cmd_contrast)

    sp = sub.add_parser("bench", help="time every stage against its baseline -> bench/results.json, RESULTS.md",
                        description="time every stage against the baseline a user would otherwise write")
    sp.add_argument("--small", action="store_true", help="the CI sizes (bench/profile.py; duration in bench/harness.py); writes bench/small/")
    sp.add_argument("--only", default=None, metavar="STAGE,...", help="run these stages only (others keep their rows)")
    sp.add_argument("--data", default=None, help="CelebA root or image folder (default: ../shared/data/celeba-subset "
                                                 "when present, else generated JPEGs)")
    sp.add_argument("--threads", type=_positive_int, default=None, help="threads to pin (default: all cores)")
    sp.add_argument("--out", default=None, metavar="DIR", help="where results.json and RESULTS.md go")
    sp.add_argument("--scaling", action="store_true",
                    help="cost against N instead: stats, kNN, structure and t-SNE at 10k, 50k, 202,599 (stats also 1M) "
                         "and openTSNE's defaults beside ours -> SCALING.md, scaling.json, figures/scaling.png "
                         "(about 35 min on 2 cores; with --small about 2.5 min)")
    sp.set_defaults(func=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zspace",
        description="Train a convolutional autoencoder on face images and study its latent cloud.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    verb = _verb_adder(sub)
    _data_and_model_verbs(verb)
    _analysis_verbs(verb)
    _generation_verbs(verb, sub)
    _run_verbs(verb, sub)
    return p


def _lock(args):
    """The run directory's lock for verbs that write it (none for a directory a typo names: the verb explains)."""
    creates = args.verb in ("prepare", "import-latents", "run")
    if _rank_env() not in (None, 0):  # under torchrun rank 0 holds it for the job
        return contextlib.nullcontext()
    if args.verb in WRITERS and (creates or Path(args.run).is_dir()):
        return run_lock(args.run, args.verb)
    return contextlib.nullcontext()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = _rank_env()  # under torchrun: rank 0 speaks for the job, the others only warn
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet or rank else logging.INFO
    if rank:
        args.quiet = True
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("faiss", "openTSNE", "numba", "matplotlib", "PIL", "torch.distributed"):  # their INFO lines say nothing to a user
        logging.getLogger(noisy).setLevel(level if args.verbose else max(level, logging.WARNING))
    # a fallback font for the figures' math text is not worth twenty lines
    logging.getLogger("matplotlib.font_manager").setLevel(level if args.verbose else logging.ERROR)
    try:
        if rank is not None and args.verb not in RANKED:
            raise ValueError(f"zspace {args.verb} runs in one process; under torchrun only {' and '.join(RANKED)} "
                             f"run (zspace run --nproc N spreads those two and runs the rest in one process)")
        with _lock(args):
            result = args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        logging.getLogger("zspace").debug("error", exc_info=True)
        if rank is not None:  # where torchrun's agent reads a rank's error
            from engine.model.launch import record_failure

            record_failure(exc)
        print(f"zspace {args.verb}{'' if rank is None else f' (rank {rank})'}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # a compiled dependency that does not fit (numba beside a too-new numpy, ...)
        from engine.deps import explain_import_error

        line = explain_import_error(exc)
        if line is None:
            raise
        logging.getLogger("zspace").debug("error", exc_info=True)
        print(f"zspace {args.verb}: error: {line}", file=sys.stderr)
        return 2
    except RankFailed as exc:
        if exc.detail:
            print(exc.detail, file=sys.stderr)
        print(f"zspace {args.verb}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        again = "rerun it with --resume to continue" if args.verb == "train" else "rerun the same command to resume"
        print(f"\nzspace {args.verb}: interrupted; {again}", file=sys.stderr)
        return 130
    if isinstance(result, int):  # a verb that printed its own answer and chose its exit code
        return result
    if result is not None and not rank:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
