"""``zspace attributes``: what the faces show, read from z, moved along, and judged by a classifier.

Writes ``RUN/attributes/``:

  attributes.json   per attribute: linear readout (AUC, interval), the dominant-components test, the two
                    directions and their angles, the judged traversal (rates per step, slope, verdict);
                    the classifier's test AUC per attribute; what was skipped and why
  attributes.md     the same as tables
  readout.csv       attribute, positives, negatives, AUC, interval, dominant AUC, random median/p95, p
  correlation.npy   float32 (A, D) point-biserial correlations, columns in component order
  heatmap.png, auc.png, judged.png, traversal_<name>.png
  classifier.pt     the attribute classifier (tensors and plain values: read with weights_only), with the
                    fingerprint of the image cache it was trained on
  reference_features.npz  its features of real test images: the quality judge's reference for compare, facemap

Rows: the train split's labelled latents (a seeded sample of ``n``) for readouts and directions; held-out
test latents for traversals and the classifier's reference. Where the run has no labels the stage writes
``attributes.json`` with the reason and logs one line: ``zspace run`` goes on.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from engine.analysis.config import StatsConfig
from engine.analysis.gaussian import GaussianFit
from engine.analysis.planes import stale
from engine.analysis.stats import detect_dominant
from engine.attributes.config import AttributesConfig
from engine.attributes.figures import attribute_figures, traversal_figure
from engine.attributes.readout import CARRIES_RULE, directions, dominant_test, folds_of, linear_readout, point_biserial
from engine.data.imagecache import open_cache
from engine.data.labels import LabelsError, run_labels, usable
from engine.data.sources import TEST, TRAIN, VALIDATION
from engine.files import file_sha256, write_json_atomic, write_text_atomic
from engine.generation.generate import decode_with, load_model, load_z
from engine.generation.judge import wilson_interval
from engine.generation.quality import REFERENCE_FILE, reference_rows, save_reference
from engine.latents.store import latents_key, open_latents
from engine.layout import cache_path
from engine.model.classifier import ClassifierConfig, judges, train_classifier

logger = logging.getLogger(__name__)

JUDGED_RULE = ("a direction changes the judged attribute when the classifier's rate at the last step lies above "
               "its rate at the first step and their 95% Wilson intervals do not overlap; the classifier judges "
               "an attribute only where its test AUC is at least 0.85")


def _dominance(fit: GaussianFit, run: Path) -> tuple[list[int], np.ndarray]:
    """(dominant components, dominance score (D,)): stats.json's list where it matches the latents, else the same
    rule on the fitted normal; the score orders components by how far centre or width stands out."""
    flags, rule = detect_dominant(fit.mean_, fit.std_, StatsConfig())
    score = np.maximum(np.abs(fit.mean_ - rule["median_mean"]) / rule["centre_threshold"],
                       (fit.std_ - rule["median_std"]) / rule["width_threshold"])
    path = run / "stats" / "stats.json"
    dominant = [int(j) for j in np.flatnonzero(flags)]
    if path.exists():
        try:
            st = json.loads(path.read_text())
            if not stale(st, run):
                dominant = [int(j) for j in st.get("dominant", dominant)]
        except json.JSONDecodeError:
            logger.warning("%s is unreadable: the dominant components are found again here", path)
    return dominant, score


def _rows(split: np.ndarray, values: np.ndarray, which: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted rows of split ``which`` labelled for at least one attribute, at most ``n`` of them (seeded)."""
    rows = np.flatnonzero((split == which) & (values >= 0).any(axis=1))
    if len(rows) > n:
        rows = np.sort(rng.choice(rows, n, replace=False))
    return rows


def _split_of(run: Path, n: int) -> np.ndarray:
    group = open_latents(run)
    return group["split"][:] if "split" in group else np.full(n, TRAIN, np.int8)


def _identity(run: Path, n: int) -> np.ndarray | None:
    try:
        import zarr

        cache = zarr.open_group(cache_path(run), mode="r")
        ident = cache["identity"][:] if "identity" in cache else None
    except Exception:  # no image cache (imported latents): folds at random
        return None
    if ident is None or len(ident) != n or (ident < 0).all():
        return None
    return ident


def traverse(z0: np.ndarray, unit: np.ndarray, separation: float, steps) -> np.ndarray:
    """float32 (len(z0) * len(steps), D): each start moved by s * separation along ``unit``, start-major."""
    offsets = np.asarray(steps, np.float64)[:, None] * separation * unit[None, :]
    return (z0[:, None, :].astype(np.float64) + offsets[None]).reshape(-1, len(unit)).astype(np.float32)


def _readouts(z, values, rows, keep, names, fit, dominant, ident, cfg: AttributesConfig, progress: bool):
    """Per usable attribute: readout, dominant test, directions; and the (A, D) point-biserial matrix."""
    per: dict[str, dict] = {}
    corr = np.zeros((len(keep), z.shape[1]), np.float32)
    for i, a in enumerate(tqdm(keep, desc="attributes", unit="attr", disable=None if progress else True, leave=False)):
        lab = values[rows, a]
        r = rows[lab >= 0]
        y = (values[r, a] == 1).astype(np.int8)
        folds = folds_of(y, None if ident is None else ident[r], cfg.folds, cfg.seed)
        zr = z[r]
        corr[i] = point_biserial(zr, y)
        dirs = directions(zr, y, fit, dominant)
        per[names[a]] = {
            "readout": linear_readout(zr, y, folds),
            "dominant": dominant_test(zr, y, dominant, folds, cfg.random_sets, cfg.seed),
            "directions": {k: ({kk: vv for kk, vv in v.items() if kk != "unit"} if isinstance(v, dict) else v)
                           for k, v in dirs.items()},
            "_unit": dirs["mean_difference"]["unit"], "_sep": dirs["mean_difference"]["separation"],
        }
    return per, corr


def attributes(run_dir: str | os.PathLike, attrs: str | os.PathLike | None = None,
               config: AttributesConfig | None = None, progress: bool = True, **overrides) -> dict:
    """Run the attribute study on ``run_dir`` (labels from ``attrs`` or the image cache); returns attributes.json.

    ``overrides``: any ``AttributesConfig`` field (n, seed, device...).
    """
    cfg = config or AttributesConfig(**{k: v for k, v in overrides.items() if v is not None})
    run = Path(run_dir)
    out = run / "attributes"
    t0 = time.perf_counter()
    try:
        names, values, info = run_labels(run, attrs)
    except (LabelsError, FileNotFoundError) as exc:
        if attrs is not None:  # the user named a file: its problem is an error, not a skip
            raise
        out.mkdir(parents=True, exist_ok=True)
        result = {"no_labels": str(exc), "inputs": {"latents_key": latents_key(run)}}
        write_json_atomic(out / "attributes.json", result, indent=2)
        logger.info("attributes: skipped, %s", exc)
        return result

    z, test_rows = load_z(run)
    if len(values) != len(z):
        raise ValueError(f"{len(values)} label rows for {len(z)} latents: prepare and encode the same images")
    split = _split_of(run, len(z))
    rng = np.random.default_rng(cfg.seed)
    rows = _rows(split, values, TRAIN, cfg.n, rng)
    if len(rows) < 2 * cfg.min_count:
        rows = _rows(np.full(len(z), TRAIN, np.int8), values, TRAIN, cfg.n, rng)  # no train split: every row
    keep, skipped = usable(values[rows], names, cfg.min_count)
    fit = GaussianFit().fit(z, progress=progress, desc="fit normal")
    dominant, score = _dominance(fit, run)
    ident = _identity(run, len(z))
    logger.info("attributes: %d of %d usable on %d train latents (%d dominant components)", len(keep), len(names),
                len(rows), len(dominant))

    per, corr = _readouts(z, values, rows, keep, names, fit, dominant, ident, cfg, progress)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "correlation.npy", corr)

    model, dev, prec = load_model(run, device=cfg.device)
    judge = _judge(run, names, values, split, cfg, progress) if cfg.classifier else None
    test = test_rows if len(test_rows) else np.arange(len(z))
    starts = test[rng.permutation(len(test))[: max(cfg.judged_starts, cfg.shown_starts)]]
    reference = _reference(judge, z, values, test, model, dev, prec) if judge else {}
    for name, rec in per.items():
        unit, sep = rec.pop("_unit"), rec.pop("_sep")
        shown = np.concatenate([fit.mean_[None].astype(np.float32), z[starts[: cfg.shown_starts]]])
        images = decode_with(model, traverse(shown, unit, sep, cfg.steps), dev, prec)
        _traversal_figure(out / f"traversal_{name}.png", name, images, len(shown), cfg.steps)
        rec["traversal_figure"] = f"traversal_{name}.png"
        if judge is not None and name in judge["judges"]:
            decoded = decode_with(model, traverse(z[starts[: cfg.judged_starts]], unit, sep, cfg.steps), dev, prec)
            probs = judge["model"].predict(decoded)[:, judge["names"].index(name)]
            rec["judged"] = _judged(probs.reshape(-1, len(cfg.steps)), cfg.steps, reference.get(name))

    result = _summary(run, names, keep, skipped, info, rows, dominant, score, per, corr, judge, cfg,
                      time.perf_counter() - t0)
    result["figures"] = attribute_figures(out, result, corr, np.argsort(-score))
    write_json_atomic(out / "attributes.json", result, indent=2)
    write_text_atomic(out / "attributes.md", _markdown(result))
    write_text_atomic(out / "readout.csv", _csv(result))
    logger.info("attributes: %d attributes in %.1f s -> %s", len(per), result["seconds"], out)
    return result


def _judge(run: Path, names, values, split, cfg: AttributesConfig, progress: bool) -> dict | None:
    """The attribute classifier trained on the cached images (train split), its test-split AUC per attribute."""
    try:
        cache = open_cache(run)
    except (FileNotFoundError, ValueError) as exc:
        logger.info("attributes: no attribute classifier (%s)", exc)
        return None
    images = cache["images"]
    train, val, test = (np.flatnonzero((split == s) & (values >= 0).any(axis=1)) for s in (TRAIN, VALIDATION, TEST))
    if len(val) == 0:
        val = train[::10]
    fitted = train_classifier(images, values, train, val, list(names),
                              ClassifierConfig(seed=cfg.seed, device=cfg.device), progress=progress)
    fitted.cache_fingerprint = cache.attrs.get("fingerprint")
    path = run / "attributes" / "classifier.pt"
    fitted.save(path)
    # the quality judge's reference, once: compare and facemap read it instead of computing it each
    ref = reference_rows(cache["split"][:], cfg.seed)
    save_reference(path.parent / REFERENCE_FILE, ref,
                   fitted.features(images.get_orthogonal_selection((ref, slice(None), slice(None), slice(None)))),
                   file_sha256(path))
    eval_rows = test if len(test) else val
    auc = fitted.auc(images.get_orthogonal_selection((eval_rows, slice(None), slice(None), slice(None))),
                     values[eval_rows])
    return {"model": fitted, "names": list(names), "test_auc": auc, "judges": judges(auc), "rows": int(len(eval_rows))}


def _reference(judge: dict, z, values, test, model, dev, prec) -> dict:
    """The classifier's rate on reconstructions of real test images, with and without each attribute."""
    rows = test[:2000]
    probs = judge["model"].predict(decode_with(model, z[rows], dev, prec))
    ref = {}
    for name in judge["judges"]:
        a = judge["names"].index(name)
        lab = values[rows, a]
        ref[name] = {}
        for key, cls in (("with", 1), ("without", 0)):
            hit = probs[lab == cls, a] > 0.5
            if len(hit):
                ref[name][key] = {"rate": float(hit.mean()), "ci95": list(wilson_interval(int(hit.sum()), len(hit))),
                                  "n": int(len(hit))}
    return ref


def _judged(probs: np.ndarray, steps, reference: dict | None) -> dict:
    """Judged rate per step (probs: (starts, steps)), Wilson bands, least-squares slope per unit step, verdict."""
    hits = probs > 0.5
    n = hits.shape[0]
    rates = hits.mean(axis=0)
    bands = [list(wilson_interval(int(h), n)) for h in hits.sum(axis=0)]
    slope = float(np.polyfit(np.asarray(steps, float), rates, 1)[0])
    changes = bool(rates[-1] > rates[0] and bands[-1][0] > bands[0][1])
    return {"steps": list(steps), "rate": rates.tolist(), "ci95": bands, "n": int(n), "slope_per_step": slope,
            "changes": changes, "reference": reference}


LINEAR_AUC = 0.7  # an attribute is "linear in z" when the lower end of its readout's interval clears this


def _summary(run, names, keep, skipped, info, rows, dominant, score, per, corr, judge, cfg, seconds) -> dict:
    carried = [a for a, r in per.items() if r["dominant"] and r["dominant"]["carries"]]
    linear = [a for a, r in per.items() if r["readout"]["ci95"][0] > LINEAR_AUC]
    changed = [a for a, r in per.items() if (r.get("judged") or {}).get("changes")]
    attr = list(per)
    by_component = {}
    for j in dominant:  # for each dominant component, the attributes it correlates with most
        order = np.argsort(-np.abs(corr[:, j]))[:3]
        by_component[str(j)] = [{"attribute": attr[i], "r": float(corr[i, j])} for i in order]
    for i, a in enumerate(attr):
        order = np.argsort(-np.abs(corr[i]))[:5]
        per[a]["top_components"] = [{"component": int(j), "r": float(corr[i, j]), "dominant": int(j) in dominant}
                                    for j in order]
    return {
        "rule": CARRIES_RULE, "judged_rule": JUDGED_RULE, "config": asdict(cfg) | {"steps": list(cfg.steps)},
        "labels": info, "names": list(names), "usable": [names[a] for a in keep], "skipped": skipped,
        "train_rows": int(len(rows)), "dominant": dominant,
        "dominance_order": [int(j) for j in np.argsort(-score)],
        "attributes": per, "carried_by_dominant": carried, "linear": linear, "linear_auc": LINEAR_AUC,
        "judged_changes": changed,
        "dominant_carry": by_component,
        "classifier": None if judge is None else {"test_auc": judge["test_auc"], "judges": judge["judges"],
                                                  "rows": judge["rows"]},
        "inputs": {"latents_key": latents_key(run)}, "seconds": round(seconds, 2),
    }


def _traversal_figure(path: Path, name: str, images: np.ndarray, rows: int, steps) -> None:
    traversal_figure(path, name, images, rows, steps)


def _markdown(res: dict) -> str:
    lines = [f"# Attributes in z-space", "", f"Labels: {res['labels'].get('source', '?')}; {res['train_rows']} train "
             f"latents; dominant components {res['dominant']}.", "", f"Rule: {res['rule']}.", "",
             "| attribute | pos | neg | AUC (95%) | dominant AUC | random median / p95 | p | carries | judged slope |",
             "|---|---:|---:|---|---:|---|---:|---|---:|"]
    for a, r in res["attributes"].items():
        ro, dt, jd = r["readout"], r["dominant"], r.get("judged")
        dom = (f"{dt['auc_dominant']:.3f} | {dt['random_median']:.3f} / {dt['random_p95']:.3f} | {dt['p']:.3f} | "
               f"{'yes' if dt['carries'] else 'no'}") if dt else "- | - | - | -"
        slope = "-" if jd is None else f"{jd['slope_per_step']:+.3f}"
        lines.append(f"| {a} | {ro['n_pos']} | {ro['n_neg']} | {ro['auc']:.3f} ({ro['ci95'][0]:.3f}-{ro['ci95'][1]:.3f}) "
                     f"| {dom} | {slope} |")
    if res["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in res["skipped"].items())]
    if res.get("classifier"):
        lines += ["", f"Classifier test AUC: " + ", ".join(f"{k} {v['auc']:.3f}" for k, v in
                                                           res["classifier"]["test_auc"].items()),
                  f"Judges (AUC >= 0.85): {', '.join(res['classifier']['judges']) or 'none'}"]
    return "\n".join(lines) + "\n"


def _csv(res: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["attribute", "n_pos", "n_neg", "auc", "auc_lo", "auc_hi", "auc_dominant", "random_median",
                "random_p95", "p", "carries"])
    for a, r in res["attributes"].items():
        ro, dt = r["readout"], r["dominant"] or {}
        w.writerow([a, ro["n_pos"], ro["n_neg"], f"{ro['auc']:.4f}", f"{ro['ci95'][0]:.4f}", f"{ro['ci95'][1]:.4f}",
                    *(f"{dt[k]:.4f}" if k in dt else "" for k in ("auc_dominant", "random_median", "random_p95", "p")),
                    dt.get("carries", "")])
    return buf.getvalue()
