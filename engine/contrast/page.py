"""``zspace contrast``: the table of every run's headline numbers, its verdicts, and the figures side by side.

Writes ``OUT/contrast.json`` (runs, rule, rows with their cells and verdicts), ``OUT/contrast.md`` and
``OUT/index.html`` (no script, no network: the figures are copied into ``OUT/figures/``).
"""

from __future__ import annotations

import html
import logging
import os
import shutil
from pathlib import Path

from engine.contrast.rows import RULE, contrast_rows, run_outputs
from engine.files import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

# the figures shown side by side: (title, file under RUN)
FIGURES = (("Radius distribution", "stats/radius.png"), ("Dominant components", "stats/dominant.png"),
           ("Face rate per sampler", "generate/compare.png"), ("Face map: rate against radius", "facemap/radius.png"))

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left} .holds{background:#e8f5e9} .differs{background:#fdecea}
.grid{display:grid;gap:1em} figure{margin:0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#444} .missing{color:#a33}
"""


def _labels(runs: list[Path]) -> list[str]:
    """Each run's folder name; the parent's too where two names are equal."""
    names = [r.resolve().name for r in runs]
    return [f"{r.resolve().parent.name}/{n}" if names.count(n) > 1 else n for r, n in zip(runs, names)]


def contrast(runs: list[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Contrast ``runs`` (at least two run directories) into ``out``; returns contrast.json's content."""
    paths = [Path(r) for r in runs]
    if len(paths) < 2:
        raise ValueError(f"contrast needs at least two runs, got {len(paths)}")
    for p in paths:
        if not p.is_dir():
            raise FileNotFoundError(f"run directory {p} does not exist")
    if len({p.resolve() for p in paths}) < len(paths):
        raise ValueError("a run is named twice: contrast needs distinct run directories")
    out = Path(out)
    if any(out.resolve() == p.resolve() for p in paths):
        raise ValueError(f"--out {out} is one of the runs: give a folder of its own")
    if out.is_dir() and any(out.iterdir()) and not (out / "contrast.json").exists():
        raise ValueError(f"--out {out} holds files that no contrast wrote: give a new or empty folder (a contrast "
                         f"replaces its figures/)")
    labels = _labels(paths)
    outputs = [run_outputs(p) for p in paths]
    if all(o["stats"] is None and o["compare"] is None for o in outputs):
        raise ValueError("none of the runs has stats or compare results: run 'zspace run' (or the stages) on them "
                         "first")
    rows = contrast_rows(outputs)
    judged = [r for r in rows if r["verdict"] in ("holds", "differs")]
    result = {"runs": [str(p) for p in paths], "labels": labels, "rule": RULE, "rows": rows,
              "holds": [r["row"] for r in judged if r["verdict"] == "holds"],
              "differs": [r["row"] for r in judged if r["verdict"] == "differs"]}
    figdir = out / "figures"
    if figdir.exists():
        shutil.rmtree(figdir)
    figdir.mkdir(parents=True)
    result["figures"] = _copy_figures(paths, figdir)
    write_json_atomic(out / "contrast.json", result, indent=1)
    write_text_atomic(out / "contrast.md", _markdown(result))
    write_text_atomic(out / "index.html", _page(result))
    logger.info("contrast of %d runs: %d rows hold in every run, %d differ -> %s", len(paths), len(result["holds"]),
                len(result["differs"]), out / "index.html")
    return result


def _copy_figures(paths: list[Path], figdir: Path) -> list[dict]:
    """[{"title", "files": [relative path or None per run]}]."""
    shown = []
    for title, rel in FIGURES:
        files = []
        for i, p in enumerate(paths):
            src = p / rel
            if src.exists():
                name = f"run{i + 1}_{rel.replace('/', '_')}"
                shutil.copy2(src, figdir / name)
                files.append(f"figures/{name}")
            else:
                files.append(None)
        shown.append({"title": title, "source": rel, "files": files})
    return shown


def _cell(c: dict | None) -> str:
    return "not run" if c is None else c["value"]


def _markdown(res: dict) -> str:
    lines = ["# Contrast of runs", "", *[f"- run {i + 1}: `{r}`" for i, r in enumerate(res["runs"])], "",
             f"Rule: {res['rule']}.", "",
             "| | " + " | ".join(res["labels"]) + " | across runs |", "|---" * (len(res["labels"]) + 2) + "|"]
    for r in res["rows"]:
        lines.append(f"| {r['row']} | " + " | ".join(_cell(c) for c in r["cells"]) + f" | {r['verdict']} |")
    lines += ["", f"Holds in every run ({len(res['holds'])}): " + ("; ".join(res["holds"]) or "none") + ".",
              "", f"Differs ({len(res['differs'])}): " + ("; ".join(res["differs"]) or "none") + "."]
    for f in res["figures"]:
        lines += ["", f"## {f['title']}", ""] + [f"![{lab}]({p})" if p else f"{lab}: not run"
                                               for lab, p in zip(res["labels"], f["files"])]
    return "\n".join(lines) + "\n"


def _page(res: dict) -> str:
    e = html.escape
    head = "<tr><th></th>" + "".join(f"<th>{e(lab)}</th>" for lab in res["labels"]) + "<th>across runs</th></tr>"
    body = "".join(
        f'<tr class="{r["verdict"]}"><td>{e(r["row"])}</td>' + "".join(f"<td>{e(_cell(c))}</td>" for c in r["cells"])
        + f"<td>{e(r['verdict'])}</td></tr>" for r in res["rows"])
    cols = f"grid-template-columns:repeat({len(res['labels'])},1fr)"
    figs = "".join(
        f"<h2>{e(f['title'])}</h2><div class=\"grid\" style=\"{cols}\">" + "".join(
            f'<figure><img src="{e(p)}" alt="{e(f["title"])}, {e(lab)}"><figcaption>{e(lab)}</figcaption></figure>'
            if p else f'<figure><p class="missing">{e(lab)}: not run</p></figure>'
            for lab, p in zip(res["labels"], f["files"])) + "</div>" for f in res["figures"])
    runs = "".join(f"<li>{e(lab)}: <code>{e(r)}</code></li>" for lab, r in zip(res["labels"], res["runs"]))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>zspace contrast</title>'
            f"<style>{CSS}</style></head><body><h1>Contrast of {len(res['runs'])} runs</h1><ul>{runs}</ul>"
            f"<p>{e(res['rule'])}.</p><p><b>Holds in every run:</b> {len(res['holds'])} rows. <b>Differs:</b> "
            f"{e('; '.join(res['differs']) or 'none')}.</p><table>{head}{body}</table>{figs}</body></html>\n")


__all__ = ["contrast"]
