"""``zspace compare``: every sampler and every path family, decoded and judged alike.

Each sampler draws ``n`` z-points with the same seed; their decoded images are judged on:

  face_rate, face_rate_ci  share of images where the Haar cascade finds a face (engine.generation.judge),
                           with its 95% Wilson interval
  consistency              median over samples of |E(D(z)) - z| / spread: how far decoding and
                           re-encoding moves a z-point, in units of the cloud's spread
                           sqrt(trace cov) (the RMS distance of a data point from the centre)
  nn_distance_ratio        median distance of a sample to its nearest training latent (an exact search)
                           / median nearest-neighbour distance among training latents
                           (1: as close to the data as the data are to each other)
  radius_ratio             median Mahalanobis radius of the samples / that of the training latents
                           (1: on the shell where the data live; 0: at the centre)
  sharpness                mean variance of the Laplacian of the images, and ``sharpness_ratio``
                           against the reconstructions of held-out images (the ``data`` sampler)

The judge's calibration (real test images, reconstructions, uniform and smoothed noise,
upside-down faces) goes with every comparison. The path families of ``zspace paths`` (origin
to centre, segments through the centre in a PCA plane and in the plane of the two dominant
components, the interpolation between two test images) get the same metrics and a per-point
face verdict.

Writes RUN/generate/compare.json, compare.md (the tables), compare.png (the figure) and
RUN/generate/NAME/ (grid.png, z.npy, images.npy, sampler.json) for every sampler.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from engine.data.feed import read_rows
from engine.data.imagecache import open_cache
from engine.figures import subplots
from engine.files import write_json_atomic, write_text_atomic
from engine.generation.cloud import TrainingCloud, search_device, training_rows
from engine.generation.config import CompareConfig
from engine.generation.generate import decode_with, encode_with, load_model, load_z, sampler_info, write_samples
from engine.deps import face_detector
from engine.generation.quality import QualityJudge
from engine.generation.judge import DEFAULT, calibration, detect, sharpness, wilson_interval
from engine.generation.paths import trace_paths
from engine.generation.config import ALL_SAMPLERS, PRIOR
from engine.generation.sampling import SAMPLERS, Sampler, SamplerConfig
from engine.latents.store import open_latents

logger = logging.getLogger(__name__)

__all__ = ["compare", "Reference", "markdown_table"]

class Reference:
    """What samples are measured against: the training latents (engine.generation.cloud), the spread, the model."""

    def __init__(self, z: np.ndarray, train_rows: np.ndarray, model, dev, prec, seed: int = 0):
        self.model, self.dev, self.prec = model, dev, prec
        self.cloud = TrainingCloud(z[train_rows], seed, search_device(dev))
        self.nn_distance, self.radius = self.cloud.nn_scale, self.cloud.median_radius
        centred = z.astype(np.float64) - z.mean(0, dtype=np.float64)
        self.spread = float(np.sqrt((centred**2).sum(1).mean()))
        if not (self.nn_distance > 0 and self.spread > 0):
            raise ValueError(f"degenerate latent cloud: spread {self.spread:g}, typical neighbour distance "
                             f"{self.nn_distance:g} (are all latents equal?)")

    def mahalanobis(self, zs: np.ndarray) -> np.ndarray:
        return self.cloud.normal.mahalanobis(zs)

    def measure(self, zs: np.ndarray, images: np.ndarray, hits: np.ndarray) -> dict:
        """Metrics of one set of z-points and their decoded images (``hits``: face found per image)."""
        count, n = int(hits.sum()), int(hits.size)
        back = encode_with(self.model, images, self.dev, self.prec)
        drift = np.linalg.norm(back.astype(np.float64) - zs, axis=1) / self.spread
        nearest = self.cloud.nearest(zs)
        sharp = sharpness(images)
        return {"n": n, "face_count": count, "face_rate": count / n, "face_rate_ci": list(wilson_interval(count, n)),
                "consistency": float(np.median(drift)), "consistency_q90": float(np.quantile(drift, 0.9)),
                "nn_distance_ratio": float(np.median(nearest) / self.nn_distance),
                "radius_ratio": float(np.median(self.mahalanobis(zs)) / self.radius),
                "sharpness": float(sharp.mean()), "z_norm_mean": float(np.linalg.norm(zs, axis=1).mean())}


def _fmt_ci(ci) -> str:
    return f"{ci[0]:.3f}-{ci[1]:.3f}"


def markdown_table(result: dict) -> str:
    """The comparison as markdown: samplers, calibration, paths."""
    lines = [f"# Which z-points decode to faces? ({result['n']} per sampler, seed {result['seed']})", "",
             "| sampler | face rate | 95% CI | consistency | NN-distance ratio | radius ratio | sharpness | vs reconstructions |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in result["samplers"].items():
        lines.append(f"| {name} | {m['face_rate']:.3f} | {_fmt_ci(m['face_rate_ci'])} | {m['consistency']:.3f} | "
                     f"{m['nn_distance_ratio']:.2f} | {m['radius_ratio']:.2f} | {m['sharpness']:.0f} | {m['sharpness_ratio']:.2f} |")
    fd = {k: m["frechet"] for k, m in result["samplers"].items() if "frechet" in m}
    if fd:
        lines += ["", "Fréchet distance of the attribute classifier's features to real test images (FID's formula "
                  "in zspace's own feature space: comparable across samplers of this run, not with published FIDs):",
                  "", "| sampler | Fréchet distance | 95% CI | n |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {f['distance']:.2f} | {f['ci95'][0]:.2f}-{f['ci95'][1]:.2f} | {f['n_a']} |"
                  for k, f in fd.items()]
    cal = result["calibration"]
    lines += ["", "consistency: median |E(D(z)) - z| / spread (spread = RMS distance from the centre, "
              f"{result['spread']:.3g}); NN-distance ratio: median distance to the nearest training latent / "
              f"median nearest-neighbour distance among training latents ({result['nn_distance']:.3g}); radius ratio: "
              f"median Mahalanobis radius / that of the training latents ({result['radius']:.3g}). In many dimensions the "
              "centre is nearer to every point than points are to each other, so a ratio below 1 does not mean 'inside "
              "the data'.", "",
              f"## Judge calibration ({cal['settings']['n']} images each)", "",
              "| control | expected | face rate | 95% CI |", "|---|---|---:|---:|"]
    expected = {"real": "high", "reconstructions": "high", "noise": "~0", "smoothed_noise": "~0",
                "upside_down": "low (negative control)"}
    for k, e in expected.items():
        if k in cal:
            lines.append(f"| {k.replace('_', ' ')} | {e} | {cal[k]['rate']:.3f} | {_fmt_ci(cal[k]['ci95'])} |")
    lines += ["", "## Paths (face found per point, in order: X face, . none)", "",
              "| path | points | faces | along the path | consistency | NN-distance ratio | radius ratio |",
              "|---|---:|---:|---|---:|---:|---:|"]
    for name, m in result["paths"].items():
        lines.append(f"| {name} | {m['n']} | {m['face_count']} | `{m['along']}` | {m['consistency']:.3f} | "
                     f"{m['nn_distance_ratio']:.2f} | {m['radius_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def draw_compare(path: Path, result: dict) -> None:
    """Face rate with its interval for every sampler beside the judge's controls; face rate vs distance to the data."""
    fig, (ax, bx) = subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.1, 1]})
    cal = result["calibration"]
    rows = [(f"control: {k.replace('_', ' ')}", cal[k]["rate"], cal[k]["ci95"], "0.6")
            for k in ("real", "noise", "smoothed_noise", "upside_down") if k in cal]
    rows += [(name, m["face_rate"], m["face_rate_ci"], "C0" if name != "data" else "C2")
             for name, m in result["samplers"].items()]
    y = np.arange(len(rows))[::-1]
    for yi, (label, rate, ci, color) in zip(y, rows):
        ax.barh(yi, rate, color=color, height=0.7)
        ax.errorbar(rate, yi, xerr=[[rate - ci[0]], [ci[1] - rate]], color="k", capsize=3, lw=1)
        ax.text(ci[1] + 0.015, yi, f"{rate:.2f}", va="center", fontsize=8)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=9)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("face rate (Haar cascade), 95% Wilson interval")
    ax.set_title(f"Decoded images judged as faces ({result['n']} per sampler)", fontsize=10)
    groups: dict = {}  # samplers at nearly the same spot share one label
    for name, m in result["samplers"].items():
        bx.scatter(m["radius_ratio"], m["face_rate"], s=40, color="C2" if name == "data" else "C0", zorder=3)
        key = (round(m["radius_ratio"] / 0.3), round(m["face_rate"] / 0.06))
        groups.setdefault(key, []).append((name, m["radius_ratio"], m["face_rate"]))
    for members in groups.values():
        _, x, y = members[0]
        bx.annotate(", ".join(g[0] for g in members), (x, y), textcoords="offset points", xytext=(6, -10 if y > 0.9 else 4),
                    fontsize=8)
    bx.axvline(1.0, color="0.6", ls=":", lw=1)
    bx.set_xlim(left=0)
    bx.set_ylim(-0.05, 1.05)
    bx.set_xlabel("median Mahalanobis radius / that of the training latents")
    bx.set_ylabel("face rate")
    bx.set_title("Face rate against the distance from the centre", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def compare(run_dir: str | os.PathLike, n: int = CompareConfig.n, seed: int = CompareConfig.seed,
            samplers: tuple[str, ...] | None = None, config: SamplerConfig | None = None,
            device: str = CompareConfig.device, progress: bool = True) -> dict:
    """Run every sampler and path family on ``run_dir``; write and return compare.json's content.

    ``samplers``: default ``SAMPLERS``, and ``prior`` (N(0, I)) too where the run's model is a vae.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    bad = [s for s in samplers or () if s not in ALL_SAMPLERS]
    if bad:
        raise ValueError(f"unknown samplers {bad}; choose from {ALL_SAMPLERS}")
    face_detector()  # the judge's OpenCV checked before any decoding: one line what to install
    t0 = time.perf_counter()
    run = Path(run_dir)
    out = run / "generate"
    z, test = load_z(run)
    group = open_latents(run)
    train_rows = training_rows(group, len(z))
    model, dev, prec = load_model(run, device=device)
    if samplers is None:
        samplers = SAMPLERS + ((PRIOR,) if model.config.family == "vae" else ())
    ref = Reference(z, train_rows, model, dev, prec, seed)
    quality = QualityJudge.for_run(run, device=device, seed=seed)  # None until 'zspace attributes' trained one

    result: dict = {"n": n, "seed": seed, "inputs": {"latents_key": group.attrs.get("key")}, "spread": ref.spread,
                    "nn_distance": ref.nn_distance, "radius": ref.radius,
                    "train_points": int(len(train_rows)), "detector": DEFAULT.settings(), "samplers": {}}
    recon = None
    order = sorted(samplers, key=lambda s: s != "data")  # reconstructions first: the sharpness reference
    for name in tqdm(order, desc="samplers", unit="sampler", disable=None if progress else True, leave=False):
        s = Sampler(name, config, seed=seed).fit(z, test_rows=test)
        zs = s.sample(n, np.random.default_rng(seed))
        images = decode_with(model, zs, dev, prec)
        write_samples(out / name, zs, images, sampler_info(s, n, seed, zs))
        m = ref.measure(zs, images, detect(images))
        if quality is not None:
            m["frechet"] = quality.distance(quality.features(images))
        result["samplers"][name] = m
        if name == "data":
            recon = images
        logger.info("%-8s face rate %.3f (%.3f-%.3f), consistency %.3f, NN ratio %.2f", name, m["face_rate"],
                    *m["face_rate_ci"], m["consistency"], m["nn_distance_ratio"])
    recon_sharp = result["samplers"]["data"]["sharpness"] if "data" in result["samplers"] else float("nan")
    for m in result["samplers"].values():
        m["sharpness_ratio"] = m["sharpness"] / recon_sharp
    result["samplers"] = {k: result["samplers"][k] for k in samplers}  # the order asked for

    # calibration: real held-out images next to their reconstructions, and the negative controls
    cache = open_cache(run)
    rng = np.random.default_rng(seed)
    real_rows = np.sort(rng.choice(test, size=min(n, len(test)), replace=False))
    real = read_rows(cache["images"], real_rows)
    result["calibration"] = calibration(real, recon, seed=seed)
    result["calibration"]["real"]["sharpness"] = float(sharpness(real).mean())

    # every path family of `zspace paths`, with an interpolation between two test images
    ids = group["ids"]
    a, b = rng.choice(test, size=2, replace=False) if len(test) >= 2 else (0, len(z) - 1)
    summary, decoded = trace_paths(run, between=(str(ids[int(a)]), str(ids[int(b)])), device=device, seed=seed)
    result["paths"] = {}
    for p in summary:
        zs, images = decoded[p["path"]]
        hits = detect(images)
        m = ref.measure(zs, images, hits)
        m.update(along="".join("X" if h else "." for h in hits), hits=hits.tolist(), title=p["title"],
                 figure=f"paths/{p['figure']}")
        result["paths"][p["path"]] = m

    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["files"] = {"table": "compare.md", "figure": "compare.png",
                       "grids": {k: f"{k}/grid.png" for k in result["samplers"]}}
    write_json_atomic(out / "compare.json", result)
    write_text_atomic(out / "compare.md", markdown_table(result))
    draw_compare(out / "compare.png", result)
    logger.info("compare: %d samplers, %d paths in %.1f s -> %s", len(samplers), len(result["paths"]),
                result["seconds"], out / "compare.json")
    return result
