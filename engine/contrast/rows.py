"""The rows of a contrast: one headline number of every run, and whether it holds across them (``RULE``).

A cell is a dict: ``{"value": shown text, "kind": "setting" | "interval" | "verdict" | "number", ...}`` with
``lo``/``hi`` (interval), ``key`` (verdict: what must be equal) or ``x`` (number); None where the run lacks the
stage. Pure functions over the JSON the stages wrote.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# samplers whose z-points do not scale with the cloud (uniform in [-1.5, 1.5], the origin and spheres of radius
# 0.5-2 around it, N(0, I)): across families whose latents differ in scale they probe different places
ABSOLUTE_SAMPLERS = ("uniform", "origin", "prior")
TOLERANCE = 0.10  # a number without an interval holds when max - min <= 10% of the largest magnitude
RULE = ("a rate with a 95% interval holds when the intervals of all runs share a point; a verdict or a count holds "
        f"when it is the same in every run; a number without an interval holds when max - min is at most "
        f"{TOLERANCE:.0%} of the largest magnitude; settings are shown, not judged; a row is judged on the runs that "
        f"have it, when at least two do")


def read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        logger.warning("%s is unreadable: its rows are left empty", path)
        return None


def run_outputs(run: Path) -> dict:
    """What the contrast reads of one run: each stage's JSON (None when absent), the latents' and training's
    settings."""
    lat = (read_json(run / "latents.zarr" / "zarr.json") or {}).get("attributes", {})
    log = []
    if (run / "train" / "log.jsonl").exists():
        for line in (run / "train" / "log.jsonl").read_text().splitlines():
            try:
                log.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return {"latents": lat, "train": read_json(run / "train" / "config.json"), "log": log,
            "stats": read_json(run / "stats" / "stats.json"), "structure": read_json(run / "structure" / "structure.json"),
            "tsne": read_json(run / "tsne" / "tsne.json"), "compare": read_json(run / "generate" / "compare.json"),
            "facemap": read_json(run / "facemap" / "facemap.json")}


def setting(value) -> dict | None:
    return None if value is None else {"value": str(value), "kind": "setting"}


def verdict(shown: str, key) -> dict:
    return {"value": shown, "kind": "verdict", "key": key}


def number(x: float, digits: int = 3) -> dict:
    return {"value": f"{x:.{digits}g}", "kind": "number", "x": float(x)}


def interval(x: float, lo: float, hi: float) -> dict:
    return {"value": f"{x:.2f} ({lo:.2f}-{hi:.2f})", "kind": "interval", "x": float(x), "lo": float(lo), "hi": float(hi)}


def judge(cells: list[dict | None]) -> str:
    """``holds``, ``differs``, ``setting`` or ``-`` (fewer than two runs have the row), by ``RULE``."""
    have = [c for c in cells if c is not None]
    if not have or have[0]["kind"] == "setting":
        return "setting" if have else "-"
    if len(have) < 2:
        return "-"
    kind = have[0]["kind"]
    if kind == "interval":
        return "holds" if max(c["lo"] for c in have) <= min(c["hi"] for c in have) else "differs"
    if kind == "verdict":
        return "holds" if len({json.dumps(c["key"], sort_keys=True) for c in have}) == 1 else "differs"
    xs = [c["x"] for c in have]
    scale = max(abs(x) for x in xs)
    return "holds" if max(xs) - min(xs) <= TOLERANCE * scale else "differs"


def _settings(o: dict) -> list[tuple[str, dict | None]]:
    model = o["latents"].get("model") or (o["train"] or {}).get("model") or {}
    train = (o["train"] or {}).get("train", {})
    kind = (o["latents"].get("source") or {}).get("kind")
    family = model.get("family", "ae") if model else ("imported" if kind == "imported" else None)
    extra = {"vae": f" (beta {train.get('beta', 1.0):g})",
             "rae": f" (z_reg {train.get('z_reg', 1.0):g}, decoder L2 {train.get('decoder_l2', 1e-4):g})"}
    val = [h["val_loss"] for h in o["log"] if "val_loss" in h]
    return [("family", setting(None if family is None else family + extra.get(family, ""))),
            ("z_dim", setting(o["latents"].get("z_dim"))), ("seed", setting(train.get("seed"))),
            ("epochs", setting(o["log"][-1]["epoch"] if o["log"] else None)),
            ("validation loss (best, per pixel)", setting(f"{min(val):.5f}" if val else None))]


def _stats(st: dict | None) -> list[tuple[str, dict | None]]:
    names = ["dominant components (count)", "shell: no point within a quarter of the peak radius",
             "radius peak / expected", "principal components for 90% of the variance", "KS distance from the normal"]
    if st is None:
        return [(n, None) for n in names]
    r = st["radius"]
    shell = r["min"] > 0.25 * r["peak"]
    return list(zip(names, [
        verdict(str(len(st["dominant"])), len(st["dominant"])),
        verdict(f"{'yes' if shell else 'no'} (min {r['min']:.1f}, peak {r['peak']:.1f})", shell),
        number(r["peak"] / r["expected"]),
        number(st["pca"]["n_components_90"]),
        number(st["normality"]["full"]["ks_distance"]),
    ]))


STRUCTURE_STATISTICS = ("local_dimension", "local_participation_ratio", "local_n90", "local_linearity",
                        "knn_distance_1", "knn_distance_k", "twonn_dimension", "twonn_mle_dimension",
                        "levina_bickel_dimension", "void_ratio")


def _structure(sj: dict | None, tj: dict | None) -> list[tuple[str, dict | None]]:
    rows = []
    stats = (sj or {}).get("statistics", {})
    for name in STRUCTURE_STATISTICS:
        v = stats.get(name)
        if v is None:
            rows.append((f"structure: {name.replace('_', ' ')} (data vs null)", None))
            continue
        side = "no difference" if not v["differs"] else ("higher" if v["data"] > v["null"] else "lower")
        rows.append((f"structure: {name.replace('_', ' ')} (data vs null)",
                     verdict(f"{v['data']:.3g} vs {v['null']:.3g}: {side}", side)))
    kl = (tj or {}).get("kl_divergence") or {}
    if kl.get("data") is not None and kl.get("null") is not None:
        side = "lower" if kl["data"] < kl["null"] else "higher"
        rows.append(("t-SNE KL divergence (data vs null)", verdict(f"{kl['data']:.3f} vs {kl['null']:.3f}: {side}", side)))
    else:
        rows.append(("t-SNE KL divergence (data vs null)", None))
    return rows


def _faces(cj: dict | None, fj: dict | None, samplers: list[str]) -> list[tuple[str, dict | None]]:
    rows = []
    for name in samplers:
        m = ((cj or {}).get("samplers") or {}).get(name)
        label = f"face rate: {name}" + (" (absolute scale)" if name in ABSOLUTE_SAMPLERS else "")
        rows.append((label, None if m is None else interval(m["face_rate"], *m["face_rate_ci"])))
    v = (fj or {}).get("verdict")
    rows.append(("face map: what explains non-faces", None if v is None else verdict(v["explains"], v["explains"])))
    q = (v or {}).get("quality")
    rows.append(("face map: does void depth lower quality",
                 None if not q or q.get("changes") is None else verdict("yes" if q["changes"] else "no", q["changes"])))
    return rows


def contrast_rows(outputs: list[dict]) -> list[dict]:
    """[{"row", "cells": [cell per run], "verdict"}] for the runs' ``run_outputs``, in the table's order."""
    samplers = []
    for o in outputs:  # every sampler any run compared, in the order the first run that has it lists them
        samplers += [s for s in ((o["compare"] or {}).get("samplers") or {}) if s not in samplers]
    per_run = [_settings(o) + _stats(o["stats"]) + _structure(o["structure"], o["tsne"])
               + _faces(o["compare"], o["facemap"], samplers) for o in outputs]
    rows = []
    for i, (name, _) in enumerate(per_run[0]):
        cells = [r[i][1] for r in per_run]
        rows.append({"row": name, "cells": cells, "verdict": judge(cells)})
    return rows


__all__ = ["RULE", "TOLERANCE", "contrast_rows", "judge", "run_outputs"]
