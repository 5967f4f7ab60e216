"""Result rows and the two files a run writes: ``results.json`` (strict JSON) and ``RESULTS.md``.

``RESULTS.md`` is generated down to the line ``NOTES_MARKER``; what follows that line is written by hand
(measurements of the main job, real CelebA, Dask and DDP runs, scaling) and is kept byte for byte when a run
rewrites the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

PEAK_NOTE = ("peak MB: the largest growth of resident memory (this process plus its worker processes, sampled every "
             "5 ms, with the kernel's high-water mark) above its level when ours started, while ours ran; "
             "for the end-to-end stats rows, the peak RSS (VmHWM) of the fresh process that ran them.")
NOTES_MARKER = "<!-- notes: kept by zspace bench -->"  # RESULTS.md from this line on is hand-written


@dataclass
class Row:
    stage: str
    size: str
    ours_s: float
    baseline_s: float
    ours: str
    baseline: str
    throughput: str
    peak_mb: float | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)
    group: str = ""  # the STAGES entry that produced the row
    machine: str = ""  # where it was measured (machine_label); rows kept by a partial run keep theirs

    @property
    def ratio(self) -> float:
        return self.baseline_s / self.ours_s if self.ours_s > 0 else float("nan")


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def format_table(rows: list[Row]) -> str:
    head = "| stage | size | ours (s) | baseline (s) | ratio | throughput | peak MB | ours vs baseline |\n"
    head += "|---|---|---:|---:|---:|---|---:|---|\n"
    lines = []
    for r in rows:
        peak = f"{r.peak_mb:,.0f}" if _finite(r.peak_mb) else ""
        ratio = f"{r.ratio:.1f}x" if _finite(r.ratio) else "-"
        base = f"{r.baseline_s:.3f}" if _finite(r.baseline_s) else "-"
        notes = f"; {r.notes}" if r.notes else ""
        lines.append(f"| {r.stage} | {r.size} | {r.ours_s:.3f} | {base} | {ratio} | {r.throughput} | {peak} "
                     f"| {r.ours} vs {r.baseline}{notes} |")
    return head + "\n".join(lines) + "\n"


def json_safe(v):
    """NaN/inf as null: results.json stays strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def row_to_json(r: Row) -> dict:
    return json_safe({**asdict(r), "ratio": r.ratio})


def row_from_json(r: dict) -> Row:
    r = {k: v for k, v in r.items() if k != "ratio"}
    for k in ("ours_s", "baseline_s"):
        if r.get(k) is None:
            r[k] = float("nan")
    return Row(**r)


def merge_previous(rows: list[Row], out_dir: Path, small: bool, names: list[str], order: list[str]) -> list[Row]:
    """A partial run refreshes its own stages and keeps the other stages' rows from ``out_dir``/results.json
    (when that file was written with the same profile), in ``order`` of the stages."""
    old = out_dir / "results.json"
    if not old.exists():
        return rows
    prev = json.loads(old.read_text())
    if prev.get("small") != small:
        return rows
    kept = [row_from_json(r) for r in prev["rows"] if r.get("group") not in names]
    return sorted(kept + rows, key=lambda r: order.index(r.group) if r.group in order else len(order))


def machine_label(info: dict) -> str:
    """"AMD EPYC, 2 cores, no GPU": the machine of ``bench.measure.machine()`` in a few words."""
    gpu = f"GPU {info['gpu']} (CUDA {info['cuda']})" if info.get("gpu") else "no GPU"
    return f"{info['cpu']}, {info['cores']} cores, {gpu}"


def other_machines(rows: list[Row], label: str) -> str:
    """A sentence naming the rows that a partial run kept from runs on other machines than ``label``."""
    by: dict[str, list[str]] = {}
    for r in rows:
        if r.machine and r.machine != label and r.stage not in by.setdefault(r.machine, []):
            by[r.machine].append(r.stage)
    if not by:
        return ""
    return ("Rows kept from earlier runs on other machines (`--only` refreshed the rest): "
            + "; ".join(f"{m}: {', '.join(stages)}" for m, stages in by.items()) + ". Compare ratios, not times, "
            "across them.\n\n")


def results_markdown(rows: list[Row], info: dict, small: bool, cores: int, pins: dict) -> str:
    pinned = "; ".join(f"{k} {v if not isinstance(v, list) else ', '.join(v)}" for k, v in pins.items())
    return (f"# Benchmark results{' (--small)' if small else ''}\n\n"
            f"Machine of this run: {machine_label(info)}; threads pinned to {cores} ({pinned}). "
            f"Python {info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".\n\n"
            + other_machines(rows, machine_label(info)) +
            "Ratio = baseline time / our time (above 1: zspace is faster); both sides timed in the same process after "
            "a warm-up. Absolute times hold for the machine that measured them only.\n\n"
            f"{PEAK_NOTE[0].upper() + PEAK_NOTE[1:]}\n\n" + format_table(rows)
            + "\nHow each stage's cost grows with N, and the t-SNE of all 202,599 points beside openTSNE's defaults: "
              "`zspace bench --scaling` (SCALING.md, figures/scaling.png).\n")


def kept_notes(path: Path) -> bytes:
    """The hand-written part of an existing RESULTS.md: its bytes from the line ``NOTES_MARKER`` on (b"" when
    the file or the line is missing)."""
    if not path.exists():
        return b""
    text, marker = b"\n" + path.read_bytes(), b"\n" + NOTES_MARKER.encode()
    at = text.find(marker)
    return text[at + 1:] if at >= 0 else b""


def write_results(out_dir: Path, result: dict, rows: list[Row]) -> None:
    """``out_dir``/results.json (``result``, its rows already JSON) and ``out_dir``/RESULTS.md, whose notes
    below ``NOTES_MARKER`` (if any) survive the rewrite unchanged."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=2))
    md = results_markdown(rows, result["machine"], result["small"], result["threads"], result["thread_pins"])
    notes = kept_notes(out_dir / "RESULTS.md")
    (out_dir / "RESULTS.md").write_bytes(md.encode() + (b"\n" + notes if notes else b""))
