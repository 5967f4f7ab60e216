"""``zspace report``: one static page of every figure and number the stages wrote.

RUN/report/index.html and report.md, grouped by the question each figure answers.
Figures are copied into RUN/report/figures/ and linked by relative paths, so the
report folder alone can be zipped and sent; the page needs no server, script or
network. A stage that has not run leaves its section with the command that fills it.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.analysis.planes import plane_figure_name, stale
from engine.data.sources import TEST
from engine.files import write_text_atomic
from engine.latents.store import open_latents
from engine.stages import STAGES

logger = logging.getLogger(__name__)

__all__ = ["write_report"]


@dataclass
class Figure:
    src: Path  # the stage's file
    title: str
    caption: str  # what it shows; the numbers that go with it
    wide: bool = False


@dataclass
class Section:
    question: str
    intro: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)  # (title, header, rows)
    missing: list[str] = field(default_factory=list)  # commands of stages not run yet


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _stage_json(run: Path, stage: str) -> dict | None:
    """A stage's JSON, or None when absent or made from other latents than latents.zarr holds now (stale)."""
    res = _json(STAGES[stage].output_path(run))
    if res is not None and stale(res, run):
        logger.warning("%s is stale (made from other latents): left out; run '%s' to refresh it",
                       STAGES[stage].output_path(run), STAGES[stage].command(run))
        return None
    return res


def _f(x, digits=3) -> str:
    return f"{x:.{digits}g}" if isinstance(x, (int, float)) else str(x)


def _test_mse(run: Path) -> float | None:
    """Mean reconstruction MSE of the test split (all images when there is no split), from latents.zarr."""
    try:
        g = open_latents(run)
        mse = g["recon_mse"][:]
    except (FileNotFoundError, ValueError, KeyError):
        return None
    if "split" in g and (g["split"][:] == TEST).any():
        mse = mse[g["split"][:] == TEST]
    return float(np.mean(mse)) if len(mse) else None


def _training(run: Path) -> Section:
    s = Section("How well does the autoencoder reconstruct faces?")
    log_path = run / "train" / "log.jsonl"
    if not log_path.exists():
        s.missing.append(STAGES["train"].command(run))
        return s
    log = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    cfg = _json(run / "train" / "config.json") or {}
    model, train = cfg.get("model", {}), cfg.get("train", {})
    first, last = log[0], log[-1]
    ips = sorted(e.get("images_per_second", 0) for e in log)[len(log) // 2]
    s.intro = (f"{model.get('size', '?')}x{model.get('size', '?')} images, z {model.get('z_dim', '?')}, "
               f"{last['epoch']} epochs on {cfg.get('device', '?')} ({cfg.get('precision', '?')}), "
               f"{ips:,.0f} images/s (median epoch).")
    s.figures.append(Figure(run / "train" / "loss.png", "Loss per epoch",
                            f"Training and validation {train.get('loss', 'bce').upper()} per pixel. Validation loss "
                            f"{first['val_loss']:.4f} after epoch 1, {last['val_loss']:.4f} after epoch {last['epoch']}."))
    grids = sorted((run / "train").glob("recon_e*.png"))
    if grids:
        mse = _test_mse(run)
        extra = f" Mean squared error over the test split {mse:.4f} (pixels in [0, 1])." if mse is not None else ""
        s.figures.append(Figure(grids[-1], "Reconstructions of fixed test images",
                                f"Top row: held-out test images; bottom row: their reconstructions after epoch "
                                f"{last['epoch']}.{extra}", wide=True))
    return s


def _region(run: Path, st: dict | None) -> Section:
    s = Section("What region of z-space do faces occupy?")
    if st is None:
        s.missing.append(STAGES["stats"].command(run))
        return s
    r = st["radius"]
    dom = st["dominant"]
    s.intro = f"{st['n']:,} latent vectors in {st['d']} dimensions."
    if dom:
        comps, rule = {c["index"]: c for c in st["components"]}, st["dominant_rule"]
        s.tables.append((f"Dominant components: centre farther than {rule['centre_threshold']:.2f} from the median "
                         f"centre {rule['median_mean']:.3f}, or sigma wider than the median {rule['median_std']:.3f} "
                         f"by more than {rule['width_threshold']:.2f}.",
                         ["component", "mean", "sigma", "fit centre", "fit sigma", "FWHM", "fit R^2", "min", "max"],
                         [[str(i), f"{c['mean']:.3f}", f"{c['std']:.3f}", f"{c['fit_center']:.3f}", f"{c['fit_sigma']:.3f}",
                           f"{c['fwhm']:.3f}", f"{c['fit_r2']:.3f}", f"{c['min']:.2f}", f"{c['max']:.2f}"]
                          for i in dom for c in [comps[i]]]))
    d = run / "stats"
    s.figures += [
        Figure(d / "density_all.png", "Number density of every component",
               f"Histograms of all {st['d']} components (bin width {st['config']['bin_width']:g}) overlaid. "
               f"Median component mean {st['dominant_rule']['median_mean']:.3f}, median width {st['dominant_rule']['median_std']:.3f}."),
        Figure(d / "dominant.png", "Dominant components", _dominant_caption(dom, st["components"])),
        Figure(d / "radius.png", "Radius distribution",
               f"|z| of every point. Peak {r['peak']:.2f} against the expectation sqrt(sum(mean^2 + var)) = "
               f"{r['expected']:.2f} and sqrt(D) = {r['sqrt_d']:.1f}; range {r['min']:.1f}-{r['max']:.1f}"
               + (": no point lies near the origin, the cloud is a shell." if r["min"] > 0.25 * r["peak"] else "."),
               wide=True),
    ]
    return s


def _shape(run: Path, st: dict | None) -> Section:
    s = Section("How is that region shaped?")
    if st is None:
        s.missing.append(STAGES["stats"].command(run))
        return s
    d = run / "stats"
    c, pca, norm = st["correlation"], st["pca"], st["normality"]["full"]
    top = c["top_pairs"][0] if c["top_pairs"] else None
    ell = {e["sigma"]: e for e in norm["ellipsoids"]}
    shares = "; ".join(f"{k}-sigma {v['share']:.3f} (normal {v['expected']:.3f})" for k, v in sorted(ell.items()))
    s.figures += [
        Figure(d / "correlation.png", "Correlations between components",
               f"Pearson r of every pair. Mean |r| {c['mean_abs_r']:.3f}, max |r| {c['max_abs_r']:.3f}"
               + (f" (components {top['i']} and {top['j']})." if top else ".")),
        Figure(d / "pairs.png", "The most correlated pairs",
               f"Joint number density of the {st['config']['pair_plots']} most strongly correlated component pairs: "
               + ", ".join(f"z[{p['i']}] and z[{p['j']}] r = {p['r']:.2f}" for p in c["top_pairs"][: st["config"]["pair_plots"]])
               + ".", wide=True),
        Figure(d / "scree.png", "PCA: variance per principal axis",
               f"{pca['n_components_50']} axes hold 50% of the variance, {pca['n_components_90']} hold 90%, "
               f"{pca['n_components_99']} hold 99%; PC1 alone {pca['explained_variance_ratio'][0]:.1%}."),
        Figure(d / "qq.png", "Is the cloud multivariate normal?",
               f"Squared Mahalanobis radii against the normal law's quantiles. KS distance {norm['ks_distance']:.3f}; "
               f"shares inside the k-sigma ellipsoids: {shares}."),
    ]
    return s


def _fragmented(run: Path) -> Section:
    s = Section("Is it one smooth cloud, or filaments and voids?",
                "Every statistic is measured on the data and on the same number of points drawn from the normal "
                "distribution fitted to them (the null model).")
    sj = _stage_json(run, "structure")
    if sj is None:
        s.missing.append(STAGES["structure"].command(run))
    else:
        stats = sj["statistics"]
        rows = [[k.replace("_", " "), _f(v["data"], 4), _f(v["null"], 4), f"{v['relative_difference']:.1%}",
                 f"{v['z']:.1f}", "differs" if v["differs"] else "no difference"] for k, v in stats.items()]
        s.tables.append((f"Data against the null model ({sj['n']:,} points, k = {sj['k']}, {sj['index']} kNN). "
                         + sj["judged"], ["statistic", "data", "null", "difference", "standard errors", "verdict"], rows))
        d = run / "structure"
        ld, tw, vr = stats["local_dimension"], stats["twonn_dimension"], stats["void_ratio"]
        s.figures += [
            Figure(d / "local_dim.png", "Local dimension",
                   f"Bias-corrected participation ratio of each point's {sj['k']} neighbours: median {ld['data']:.1f} "
                   f"(null {ld['null']:.1f}); TwoNN dimension {tw['data']:.1f} (null {tw['null']:.1f})."),
            Figure(d / "knn_distances.png", "Neighbour distances",
                   f"Distances to the 1st and {sj['k']}th neighbour, data against null. Void ratio {vr['data']:.3f} "
                   f"(null {vr['null']:.3f}): above 1, random probes sit farther from the data than points do from each other."),
        ]
        for plane in sj.get("planes", []):
            name = plane.get("figure") or plane_figure_name(plane["plane"])
            w = plane["windows"][0]
            s.figures.append(Figure(d / name, f"Plane {plane['plane']}",
                                    f"Projections of all points onto the plane, data above null. Empty cells inside "
                                    f"the 95% ellipse (window {w['side']:g}): data {w['empty_share_data']:.3f}, "
                                    f"null {w['empty_share_null']:.3f}."))
    tj = _stage_json(run, "tsne")
    if tj is None:
        s.missing.append(STAGES["tsne"].command(run))
    else:
        kl = tj.get("kl_divergence", {})
        kept = tj.get("neighbours_kept_15", {})
        s.figures.append(Figure(run / "tsne" / "tsne.png", "t-SNE map, data beside null",
                                f"openTSNE of {tj['n']:,} points ({tj['space']}), perplexity {tj['config']['perplexity']:g}. "
                                f"KL divergence data {kl.get('data', float('nan')):.3f}, null {kl.get('null', float('nan')):.3f}; "
                                f"share of each point's 15 nearest neighbours in z kept in the map: data "
                                f"{kept.get('data', float('nan')):.3f}, null {kept.get('null', float('nan')):.3f}.",
                                wide=True))
    return s


def _facemap(run: Path, s: Section) -> None:
    """The face map's verdict, figures and logistic model lead the faces section."""
    fj = _stage_json(run, "facemap")
    if fj is None:
        s.missing.append(STAGES["facemap"].command(run))
        return
    v, d, lg = fj["verdict"], run / "facemap", fj["logistic"]
    s.intro = f"Region or voids? {v['sentence']} " + s.intro
    s.figures += [
        Figure(d / "radius.png", "Face rate against the distance from the centre",
               f"z-points at controlled Mahalanobis radius, r = 0 ... {fj['config']['radii'][-1]:g} x the training "
               f"latents' median radius ({fj['median_radius']:.3g}), along random whitened directions and along the "
               f"principal axes; grey: the central half of the data's radii. Face rate at r = 1: "
               f"{v['rate_at_1']['rate']:.2f}; near the centre (r <= 0.2): {v['centre_rate']['rate']:.2f}"
               + (" (a hole)." if v["hole_at_centre"] else " (no hole).")),
        Figure(d / "depth.png", "Face rate against void depth, at the median radius",
               "Every probe moved to the data's median radius; void depth = distance to the nearest training latent / "
               f"the typical neighbour distance among them ({fj['nn_scale']:.3g}). Right: the depths each probe "
               "family covers (the random-direction sweep dashed)."),
        Figure(d / "map.png", "Face rate over radius and void depth",
               f"All {fj['n_probes']:,} probes of both experiments: the sweeps climb in depth as they leave the "
               "centre; the depth probes stand in the column at r = 1."),
        Figure(d / "strip.png", "What a void looks like",
               f"{fj['config']['strip']} decoded probes per depth bin ({len(fj['depth']['pooled'])} bins), shallow at "
               f"the top; the face rate of each bin beside it.", wide=True),
    ]
    if np.isfinite(lg["coef"][0]):
        s.tables.append(("Logistic model of P(face) on standardised radius ratio and void depth "
                         f"({lg['regularisation']}; 95% bootstrap intervals, {lg.get('bootstrap', 0)} resamples). "
                         "Every probe enters it: along the sweeps depth grows with radius, so the coefficients share "
                         "what the sweeps show; the verdict on depth is read at fixed radius, from the depth bins.",
                         ["feature", "coefficient", "95% interval"],
                         [[f.replace("_", " "), f"{c:.3f}", f"{ci[0]:.3f} to {ci[1]:.3f}"]
                          for f, c, ci in zip(lg["features"], lg["coef"], lg["coef_ci95"])]))


def _faces(run: Path) -> Section:
    s = Section("Which z-points decode to faces?",
                "Decoded images judged by OpenCV's Haar frontal-face cascade (not trained here), with its calibration.")
    _facemap(run, s)
    cj = _stage_json(run, "compare")
    if cj is None:
        s.missing.append(STAGES["compare"].command(run))
        return s
    g = run / "generate"
    sm = cj["samplers"]
    rows = [[k, f"{m['face_rate']:.3f}", f"{m['face_rate_ci'][0]:.3f}-{m['face_rate_ci'][1]:.3f}", f"{m['consistency']:.3f}",
             f"{m['nn_distance_ratio']:.2f}", f"{m.get('radius_ratio', float('nan')):.2f}", f"{m['sharpness_ratio']:.2f}"]
            for k, m in sm.items()]
    quality = all("frechet" in m for m in sm.values())
    if quality:  # the attribute classifier's Fréchet distance to real test images, beside the face rate
        for row, m in zip(rows, sm.values()):
            row.append(f"{m['frechet']['distance']:.2f} ({m['frechet']['ci95'][0]:.2f}-{m['frechet']['ci95'][1]:.2f})")
    s.tables.append((f"Samplers ({cj['n']} z-points each, seed {cj['seed']}). Consistency: median |E(D(z)) - z| / spread; "
                     "NN-distance ratio: distance to the nearest training latent / typical neighbour distance; radius "
                     "ratio: Mahalanobis radius / the data's; sharpness against reconstructions.",
                     ["sampler", "face rate", "95% CI", "consistency", "NN-distance ratio", "radius ratio", "sharpness"]
                     + (["Fréchet distance (95%)"] if quality else []), rows))
    cal = cj["calibration"]
    crow = [[k.replace("_", " "), f"{cal[k]['rate']:.3f}", f"{cal[k]['ci95'][0]:.3f}-{cal[k]['ci95'][1]:.3f}"]
            for k in ("real", "reconstructions", "noise", "smoothed_noise", "upside_down") if k in cal]
    s.tables.append((f"Judge calibration ({cal['settings']['n']} images each): real and reconstructed faces should score "
                     "high, noise near 0; upside-down faces are a negative control.", ["control", "face rate", "95% CI"], crow))
    best = max(sm, key=lambda k: sm[k]["face_rate"])
    worst = min(sm, key=lambda k: sm[k]["face_rate"])
    s.figures.append(Figure(g / "compare.png", "Face rate per sampler",
                            f"Highest: {best} {sm[best]['face_rate']:.2f}; lowest: {worst} {sm[worst]['face_rate']:.2f}. "
                            f"Real test images {cal['real']['rate']:.2f}, noise {cal['noise']['rate']:.2f}.", wide=True))
    paths = cj.get("paths", {})
    if paths:
        s.tables.append(("Paths: X marks a decoded point in which the judge finds a face, . one without, in path order.",
                         ["path", "points", "face rate", "along the path", "consistency", "NN-distance ratio"],
                         [[k.replace("_", " "), str(m["n"]), f"{m['face_rate']:.2f}", m["along"], f"{m['consistency']:.3f}",
                           f"{m['nn_distance_ratio']:.2f}"] for k, m in paths.items()]))
    for k, m in sm.items():
        s.figures.append(Figure(g / k / "grid.png", f"Sampler: {k}",
                                f"The first 64 of {m['n']} decoded z-points. Face rate {m['face_rate']:.2f} "
                                f"({m['face_rate_ci'][0]:.2f}-{m['face_rate_ci'][1]:.2f}); radius ratio "
                                f"{m.get('radius_ratio', float('nan')):.2f}."))
    for k, m in paths.items():
        s.figures.append(Figure(g / m["figure"], f"Path: {k.replace('_', ' ')}",
                                f"{m['title']}. Face found at {m['face_count']} of {m['n']} points "
                                f"(along the path: {m['along']}).", wide=True))
    return s


TRAVERSALS_SHOWN = 12  # traversal figures in the report (best-read attributes first); all are in RUN/attributes/


def _attributes(run: Path) -> Section | None:
    """What the components carry; None (no section) where the run has no labels."""
    aj = _stage_json(run, "attributes")
    s = Section("What do the components carry?",
                "Attribute labels against z: linear readouts, the dominant components against random sets of as many "
                "others, directions, and decoded traversals judged by a classifier trained on the real images.")
    if aj is None:
        s.missing.append(STAGES["attributes"].command(run))
        return s
    if "no_labels" in aj:
        return None
    per, d = aj["attributes"], run / "attributes"
    rows = []
    for a, r in per.items():
        ro, dt, jd = r["readout"], r["dominant"], r.get("judged")
        rows.append([a, str(ro["n_pos"]), f"{ro['auc']:.3f}", f"{ro['ci95'][0]:.3f}-{ro['ci95'][1]:.3f}",
                     "-" if dt is None else f"{dt['auc_dominant']:.3f}",
                     "-" if dt is None else f"{dt['random_median']:.3f} / {dt['random_p95']:.3f}",
                     "-" if dt is None else ("yes" if dt["carries"] else "no"),
                     f"{r['directions']['angle_between']:.0f}",
                     "-" if jd is None else f"{jd['slope_per_step']:+.3f}{' *' if jd['changes'] else ''}"])
    s.tables.append((f"{len(per)} attributes on {aj['train_rows']:,} train latents ({aj['labels'].get('source', '')}). "
                     f"Rule: {aj['rule']}. Angle: between the logistic and the class-mean direction, degrees. Judged "
                     f"slope: the classifier's rate per step along the direction (* changes, by the rule).",
                     ["attribute", "positives", "AUC", "95% CI", "dominant AUC", "random median / p95", "carries",
                      "angle", "judged slope"], rows))
    if aj.get("skipped"):
        s.intro += " Skipped: " + "; ".join(f"{k} ({v})" for k, v in aj["skipped"].items()) + "."
    cl = aj.get("classifier")
    if cl:
        s.tables.append((f"The attribute classifier on {cl['rows']:,} held-out images (a judge counts where its AUC "
                         f"is at least 0.85).", ["attribute", "test AUC", "95% CI", "judge"],
                         [[a, f"{v['auc']:.3f}", f"{v['ci95'][0]:.3f}-{v['ci95'][1]:.3f}",
                           "yes" if a in cl["judges"] else "no"] for a, v in cl["test_auc"].items()]))
    s.figures += [Figure(d / "heatmap.png", "Which components carry what",
                         f"Point-biserial correlation of each component with each of the {len(per)} attributes; "
                         f"components ordered by dominance, the {len(aj['dominant'])} dominant ones in red.", wide=True),
                  Figure(d / "auc.png", "Readouts against random component sets",
                         f"The dominant components carry {len(aj['carried_by_dominant'])} of {len(per)}: "
                         f"{', '.join(aj['carried_by_dominant']) or 'none'}.", wide=True)]
    if "judged.png" in aj.get("figures", []):
        s.figures.append(Figure(d / "judged.png", "Does moving along a direction change what the classifier sees?",
                                f"Changes, by the rule, for {len(aj['judged_changes'])} attributes: "
                                f"{', '.join(aj['judged_changes']) or 'none'}.", wide=True))
    for a in sorted(per, key=lambda a: -per[a]["readout"]["auc"])[:TRAVERSALS_SHOWN]:
        s.figures.append(Figure(d / per[a]["traversal_figure"], f"Traversal: {a}",
                                f"From the centre (top row) and held-out test latents, steps of class-mean separations "
                                f"({per[a]['directions']['mean_difference']['separation']:.2f}) along the class-mean "
                                f"direction. Readout AUC {per[a]['readout']['auc']:.3f}."))
    return s


def _sections(run: Path) -> list[Section]:
    st = _stage_json(run, "stats")
    found = [_training(run), _region(run, st), _shape(run, st), _fragmented(run), _faces(run), _attributes(run)]
    return [x for x in found if x is not None]


def _finding_attributes(aj: dict | None) -> str | None:
    if aj is None or "no_labels" in aj or not aj["attributes"]:
        return None
    per = aj["attributes"]
    best = sorted(per, key=lambda a: -per[a]["readout"]["auc"])[:3]
    parts = [f"{len(aj['linear'])} of {len(per)} attributes are linear in z (AUC interval above {aj['linear_auc']}); "
             f"best read: " + ", ".join(f"{a} {per[a]['readout']['auc']:.2f}" for a in best) + "."]
    carried = aj["carried_by_dominant"]
    tested = [a for a in per if per[a]["dominant"]]
    if tested:
        parts.append(f"The {len(aj['dominant'])} dominant components carry {len(carried)} of {len(tested)} attributes "
                     f"more than random sets of as many others" + (f" ({', '.join(carried)})" if carried else "") + ".")
    if aj.get("classifier"):
        judged = [a for a in per if per[a].get("judged")]
        parts.append(f"Moving along the direction changes the classifier's verdict for {len(aj['judged_changes'])} "
                     f"of {len(judged)} judged attributes" +
                     (f" ({', '.join(aj['judged_changes'])})" if aj["judged_changes"] else "") + ".")
    return " ".join(parts)


PLANE_SAME = 0.05  # plane views whose empty-cell shares are this close to the null's look like the null


def _dominant_caption(dom: list[int], comps: list[dict]) -> str:
    """What dominant.png shows: the dominant components, or the widest four when none stands out."""
    if not dom:
        widest = sorted(range(len(comps)), key=lambda j: -comps[j]["std"])[:4]
        return (f"No component stands out by centre or width (the rule is in stats.json); shown instead, with their "
                f"Gaussian fits, the {len(widest)} widest: {', '.join(map(str, widest))}.")
    listed = ", ".join(map(str, dom[:12])) + (" ..." if len(dom) > 12 else "")
    return (f"{len(dom)} component{'s stand' if len(dom) > 1 else ' stands'} out by centre or width: {listed}, each "
            f"shown with its Gaussian fit (the rule is in stats.json).")


def _finding_region(st: dict | None) -> str | None:
    if st is None:
        return None
    r, dom = st["radius"], st["dominant"]
    shell = r["min"] > 0.25 * r["peak"]
    return (f"{'A shell, not a ball' if shell else 'A filled ball'}: |z| peaks at {r['peak']:.2f} (expected "
            f"{r['expected']:.2f}, sqrt(D) = {r['sqrt_d']:.1f}) and no point lies within {r['min']:.1f} of the origin; "
            + (f"{len(dom)} of {st['d']} components stand out by centre or width." if dom else
               f"none of the {st['d']} components stands out by centre or width."))


def _finding_shape(st: dict | None) -> str | None:
    if st is None:
        return None
    pca, norm, c = st["pca"], st["normality"]["full"], st["correlation"]
    return (f"{pca['n_components_90']} principal axes hold 90% of the variance (PC1 alone "
            f"{pca['explained_variance_ratio'][0]:.1%}), the largest correlation between components is |r| = "
            f"{c['max_abs_r']:.2f}, and the cloud is {'not ' if norm['ks_distance'] > 0.05 else ''}multivariate normal "
            f"(KS distance of the Mahalanobis radii {norm['ks_distance']:.2f}).")


def _finding_fragmented(sj: dict | None, tj: dict | None) -> str | None:
    if sj is None:
        return None
    st = sj["statistics"]
    differ = [k for k, v in st.items() if v["differs"]]
    ld, tw, vr = st["local_dimension"], st["twonn_dimension"], st["void_ratio"]
    text = (f"{len(differ)} of {len(st)} neighbour statistics differ from the fitted-normal null (local dimension "
            f"{ld['data']:.0f} vs {ld['null']:.0f}, TwoNN {tw['data']:.1f} vs {tw['null']:.1f}, void ratio "
            f"{vr['data']:.2f} vs {vr['null']:.2f})")
    planes, gaps = [], []
    for p in sj.get("planes", []):
        w = min(p["windows"], key=lambda w: abs(w["empty_share_null"] - 0.5))  # the most telling window
        planes.append(f"{p['plane']} (window {w['side']:g}): {w['empty_share_data']:.3f} vs {w['empty_share_null']:.3f}")
        gaps.append(abs(w["empty_share_data"] - w["empty_share_null"]))
    if planes:
        same = max(gaps) <= PLANE_SAME
        share = f"the null's share of empty cells, within {PLANE_SAME:g}" if same else "other empty-cell shares than the null"
        text += (f"; {'yet ' if same and differ else ''}the plane views (projections of all points) show {share} "
                 "(data vs null, in the window where the null leaves nearest half the cells empty: "
                 + "; ".join(planes) + ")"
                 + (", so 'lines around voids' in 2-D views are no evidence of fragmentation" if same and differ else ""))
    if tj is not None and "kl_divergence" in tj:
        kl = tj["kl_divergence"]
        text += f"; t-SNE KL divergence {kl.get('data', float('nan')):.2f} vs {kl.get('null', float('nan')):.2f} (null)"
    return text + "."


def _finding_faces(fj: dict | None, cj: dict | None) -> str | None:
    parts = [fj["verdict"]["sentence"]] if fj is not None else []
    if fj is not None and (fj["verdict"].get("quality") or {}).get("changes") is not None:
        parts.append(fj["verdict"]["quality"]["sentence"])
    if fj is not None:
        at1 = {k: next((s for s in v if abs(s["r"] - 1) < 1e-9), None) for k, v in fj["sweep"].items()}
        if at1.get("sweep_axes") and at1.get("sweep_random"):
            parts.append(f"At r = 1 the face rate is {at1['sweep_random']['rate']:.2f} along random directions and "
                         f"{at1['sweep_axes']['rate']:.2f} along the principal axes.")
    if cj is not None:
        sm = cj["samplers"]
        rates = ", ".join(f"{k} {sm[k]['face_rate']:.2f} (radius ratio {sm[k].get('radius_ratio', float('nan')):.2f})"
                          for k in ("mvn", "gauss", "box", "uniform", "origin") if k in sm)
        parts.append(f"Face rates per sampler: {rates}; real test images {cj['calibration']['real']['rate']:.2f}.")
        o = sm.get("origin")
        if o is not None and o["face_rate"] < 0.5 and abs(o.get("radius_ratio", 0) - 1) < 0.2 and o["nn_distance_ratio"] < 1:
            parts.append(f"z = 0 lies at the data's typical radius (ratio {o['radius_ratio']:.2f}) and nearer to the "
                         f"training latents than they are to each other (ratio {o['nn_distance_ratio']:.2f}), yet decodes "
                         f"to a face at rate {o['face_rate']:.2f}: the face region is not a ball in Mahalanobis distance.")
    return " ".join(parts) or None


def _findings(run: Path) -> list[tuple[str, str, str]]:
    """(question, answer with its numbers, anchor of its section), from the JSON of the stages that ran."""
    st, sj, tj = _stage_json(run, "stats"), _stage_json(run, "structure"), _stage_json(run, "tsne")
    fj, cj = _stage_json(run, "facemap"), _stage_json(run, "compare")
    found = [("What region?", _finding_region(st), "q2"), ("What shape?", _finding_shape(st), "q3"),
             ("Fragmented or not?", _finding_fragmented(sj, tj), "q4"),
             ("Which z-points are faces?", _finding_faces(fj, cj), "q5"),
             ("What do the components carry?", _finding_attributes(_stage_json(run, "attributes")), "q6")]
    return [(q, a, anchor) for q, a, anchor in found if a]


CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.7em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:2px solid #ddd;padding-bottom:.2em}
.meta{color:#555} nav a{margin-right:1em}
.grid{display:flex;flex-wrap:wrap;gap:1.2em}
figure{margin:0;flex:1 1 520px;max-width:100%} figure.wide{flex-basis:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#333} figcaption b{display:block}
table{border-collapse:collapse;margin:1em 0;font-size:.9em} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left} caption{caption-side:top;text-align:left;font-size:.9em;color:#444;padding:.3em 0}
.missing{color:#a33}
"""


def _header(run: Path) -> tuple[str, list[str]]:
    lines = []
    lat = (_json(run / "latents.zarr" / "zarr.json") or {}).get("attributes", {})
    src = lat.get("source", {})
    if src:
        family = {"ae": "a plain autoencoder", "vae": "a variational autoencoder", "rae": "a regularised autoencoder"}
        of = f" of {family[lat['model'].get('family', 'ae')]}" if lat.get("model") else ""
        lines.append(f"Source: {src.get('kind', '?')} {src.get('spec', '')} ({lat.get('n', '?'):,} images), "
                     f"latents z {lat.get('z_dim', '?')}{of} from checkpoint epoch {lat.get('checkpoint_epoch', '?')}.")
    state = _json(run / "pipeline.json")
    if state:
        t = [f"{k} {v['seconds']:.0f} s" for k, v in state.get("stages", {}).items()
             if isinstance(v.get("seconds"), (int, float))]
        if t:
            lines.append("Stage times (last run of each): " + ", ".join(t) + ".")
    return f"zspace report: {run.resolve().name}", lines


def _explore_link(run: Path) -> tuple[str, str]:
    """(html, markdown) of the line at the report's top: the explore page when it exists, else how to make it."""
    info = _json(run / "explore" / "explore.json")
    if (run / "explore" / "index.html").exists() and info and not stale(info, run):
        what = f"{info.get('n', 0):,} points" + (" (every latent)" if info.get("all_points") else "")
        return (f'<p class="explore"><a id="explore-link" href="../explore/index.html">Explore every point</a>: '
                f"the map of {html.escape(what)}, each point's face on hover, decoded paths and selections.</p>",
                f"[Explore every point](../explore/index.html): the map of {what}.")
    cmd = f"zspace explore --run {run}"
    if info and (run / "explore" / "index.html").exists():  # a page of other latents than these
        return (f'<p class="missing">The explore page shows other latents than these: <code>{html.escape(cmd)}'
                f"</code> makes it again.</p>", f"The explore page shows other latents than these: `{cmd}`.")
    return (f'<p class="missing">Not made yet: the explore page of every point (<code>{html.escape(cmd)}</code>, '
            f"needs <code>pip install 'zspace[explore]'</code>).</p>", f"Not made yet: the explore page (`{cmd}`).")


def write_report(run_dir: str | os.PathLike) -> dict:
    """Write RUN/report/index.html, report.md and figures/; returns what went in."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist")
    out = run / "report"
    figdir = out / "figures"
    if figdir.exists():
        shutil.rmtree(figdir)
    figdir.mkdir(parents=True)
    sections = _sections(run)
    title, meta = _header(run)
    body, md = [], [f"# {title}", ""] + [m + "  " for m in meta] + [""]
    findings = _findings(run)
    if findings:
        body.append('<section id="findings"><h2>Findings</h2><ul>' + "".join(
            f'<li><b>{html.escape(q)}</b> {html.escape(a)} <a href="#{anchor}">(section)</a></li>'
            for q, a, anchor in findings) + "</ul></section>")
        md += ["## Findings", ""] + [f"- **{q}** {a} ([section](#{anchor}))" for q, a, anchor in findings] + [""]
    nfig, missing_files = 0, []
    for i, s in enumerate(sections, 1):
        body.append(f'<section id="q{i}"><h2>{i}. {html.escape(s.question)}</h2>')
        md += [f"## {i}. {s.question}", ""]
        if s.intro:
            body.append(f"<p>{html.escape(s.intro)}</p>")
            md += [s.intro, ""]
        for cmd in s.missing:
            body.append(f'<p class="missing">Not run yet: <code>{html.escape(cmd)}</code></p>')
            md += [f"Not run yet: `{cmd}`", ""]
        for title_t, header, rows in s.tables:
            body.append("<table><caption>" + html.escape(title_t) + "</caption><tr>"
                        + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table>")
            md += [title_t, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            md += ["| " + " | ".join(r) + " |" for r in rows] + [""]
        figs = []
        for f in s.figures:
            if not f.src.exists():
                missing_files.append(str(f.src))
                continue
            rel = f"figures/{f.src.relative_to(run).as_posix().replace('/', '_')}"
            shutil.copy2(f.src, out / rel)
            nfig += 1
            alt = html.escape(f.title, quote=True)
            figs.append(f'<figure class="{"wide" if f.wide else ""}"><img src="{rel}" alt="{alt}">'
                        f"<figcaption><b>{html.escape(f.title)}</b>{html.escape(f.caption)}</figcaption></figure>")
            md += [f"![{f.title}]({rel})", "", f"**{f.title}.** {f.caption}", ""]
        if figs:
            body.append('<div class="grid">' + "".join(figs) + "</div>")
        body.append("</section>")
    nav = ('<a href="#findings">Findings</a>' if findings else "") + "".join(
        f'<a href="#q{i}">{i}. {html.escape(s.question)}</a>' for i, s in enumerate(sections, 1))
    explore = _explore_link(run)
    md[1:1] = ["", explore[1]]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
            f"<h1>{html.escape(title)}</h1>" + explore[0] + "".join(f'<p class="meta">{html.escape(m)}</p>' for m in meta)
            + f"<nav>{nav}</nav>" + "\n".join(body) + "</body></html>\n")
    write_text_atomic(out / "index.html", page)
    write_text_atomic(out / "report.md", "\n".join(md) + "\n")
    if missing_files:
        logger.warning("report: %d figures named by the stages' JSON are missing, e.g. %s", len(missing_files), missing_files[0])
    logger.info("report: %d figures in %d sections -> %s", nfig, len(sections), out / "index.html")
    return {"report": str(out / "index.html"), "markdown": str(out / "report.md"), "figures": nfig,
            "missing_stages": [c for s in sections for c in s.missing], "missing_figures": missing_files}
