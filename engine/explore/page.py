"""``zspace explore``: RUN/explore/, a page that opens from disk and shows every point of the latent cloud.

Drawn with Bokeh: its scatter takes hundreds of thousands of points, and it brings
pan, wheel zoom, hover, tap, box and lasso selection with a spatial index, all in
BokehJS, which the page loads from two files copied out of the installed ``bokeh``
package (1.5 MB). The page picks the backend when it opens: WebGL where the browser
runs WebGL on a GPU, the 2D canvas where WebGL runs in software (there BokehJS's
copy of each WebGL picture into the page costs more than the points). The page's
own script (``explore.js``, shipped with zspace) fills the plot's columns from
``data.js``, switches layouts and colours, draws the legend, shows thumbnails on
hover, and decodes z-points with a JavaScript port of the run's decoder: paths
between any two points and the mean face of any selection are decoded in the
page, live, with no server and nothing decoded ahead of time (the decoder is a
dense layer and four transposed convolutions, about 10 MFLOP an image).
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from engine.deps import bokeh_version
from engine.explore.bundle import write_data, write_decoder, write_latents, write_thumbnails
from engine.explore.columns import gather
from engine.explore.config import ExploreConfig
from engine.data.imagecache import open_cache
from engine.files import swap_in, write_json_atomic, write_text_atomic
from engine.generation.generate import load_model
from engine.latents.store import latents_key, open_latents
from engine.layout import latents_path

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
BOKEH_FILES = ("bokeh.min.js", "bokeh-gl.min.js")  # BokehJS core and its WebGL backend
OURS = ("explore.js", "explore.css")


def _bokeh_doc() -> tuple[str, str, str]:
    """(document JSON, map div, null map div) of the two linked plots, their columns empty (explore.js fills them).

    The JSON is not embedded by Bokeh's own loader script: explore.js embeds it once it has chosen the plots'
    backend (WebGL or the 2D canvas, see ``explore.js``'s ``chooseBackend``)."""
    from bokeh.core.json_encoder import serialize_json
    from bokeh.core.templates import MACROS, ROOT_DIV
    from bokeh.embed.util import OutputDocumentFor, standalone_docs_json_and_render_items
    from bokeh.models import ColumnDataSource, CustomJS, HoverTool, LinearColorMapper, Range1d
    from bokeh.palettes import Viridis256
    from bokeh.plotting import figure

    tools = "pan,wheel_zoom,box_select,lasso_select,tap,reset"
    # fixed ranges that explore.js sets (equal units on both axes): a range fitted to the data would follow the
    # drawn subset of a large map
    xr, yr = Range1d(0, 1, name="x_range"), Range1d(0, 1, name="y_range")
    # lod_threshold=None: BokehJS's own thinning while you interact is off (explore.js has its own, the same for a
    # script and a hand); output_backend is set by explore.js when it embeds the document
    common = dict(output_backend="webgl", tools=tools, active_scroll="wheel_zoom", x_range=xr, y_range=yr,
                  sizing_mode="stretch_both", toolbar_location="above", lod_threshold=None)
    # every point in view as a shade under the drawn sample (explore.js bins them at the frame's resolution)
    shade = dict(image="image", x="x", y="y", dw="dw", dh="dh", level="image")
    empty_image = {"image": [], "x": [], "y": [], "dw": [], "dh": []}
    points = ColumnDataSource(data={"x": [], "y": [], "c": []}, name="points_source")
    mapper = LinearColorMapper(palette=Viridis256, low=0.0, high=1.0, nan_color="#c8c8c8", name="mapper")
    fmap = figure(title="data", name="map", **common)
    fmap.image_rgba(source=ColumnDataSource(data=empty_image, name="density_source"), name="density", **shade)
    r = fmap.scatter("x", "y", source=points, size=3, line_color=None, fill_alpha=0.7, name="points",
                     fill_color={"field": "c", "transform": mapper},
                     nonselection_fill_alpha=0.12, selection_fill_alpha=0.9)
    # the probes and the highlight rings are drawn on the 2D canvas (Bokeh has no WebGL ellipse): BokehJS copies
    # its WebGL canvas into the 2D one after every WebGL renderer, drawn or not, which in software WebGL costs
    # about 50 ms a frame each
    screen = dict(width_units="screen", height_units="screen")
    probes = ColumnDataSource(data={"x": [], "y": [], "c": []}, name="probes_source")
    fmap.ellipse("x", "y", width=5, height=5, source=probes, line_color=None, visible=False,
                 fill_color={"field": "c", "transform": mapper}, name="probes", **screen)
    hl = ColumnDataSource(data={"x": [], "y": [], "kind": []}, name="highlight_source")
    fmap.ellipse("x", "y", width=11, height=11, source=hl, fill_color=None, line_color="#e4002b", line_width=2,
                 name="highlight", **screen)
    fmap.add_tools(HoverTool(renderers=[r], tooltips=None, name="hover",
                             callback=CustomJS(code="if (window.zspace) zspace.hover(cb_data);")))
    points.selected.js_on_change("indices", CustomJS(code="if (window.zspace) zspace.select(cb_obj.indices);"))
    fmap.js_on_event("selectiongeometry", CustomJS(code="if (window.zspace) zspace.geometry(cb_obj.geometry, cb_obj.final);"))
    null = ColumnDataSource(data={"x": [], "y": []}, name="null_source")
    fnull = figure(title="null: the fitted normal", name="null_map", **common)
    fnull.image_rgba(source=ColumnDataSource(data=empty_image, name="null_density_source"), name="null_density", **shade)
    fnull.scatter("x", "y", source=null, size=3, line_color=None, fill_color="#6b6b6b", fill_alpha=0.55,
                  name="null_points")
    redraw = CustomJS(code="if (window.zspace) zspace.rangesChanged();")  # pan, zoom, reset or a script
    for r in (xr, yr):
        r.js_on_change("start", redraw)
        r.js_on_change("end", redraw)
    with OutputDocumentFor((fmap, fnull)):
        docs, [item] = standalone_docs_json_and_render_items((fmap, fnull))
    div_map, div_null = (ROOT_DIV.render(root=r, macros=MACROS) for r in item.roots)
    doc = serialize_json({"docs": docs, "items": [item.to_json()]}).replace("</", "<\\/")  # safe inside <script>
    return doc, div_map, div_null


def _html(title: str, doc: str, div_map: str, div_null: str) -> str:
    bokeh = "".join(f'<script src="bokeh/{f}"></script>' for f in BOKEH_FILES)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="explore.css">
<script src="data.js"></script><script src="decoder.js"></script>
{bokeh}
</head><body>
<header><h1>{html.escape(title)}</h1>
<a href="../report/index.html">report</a>
<label>layout <select id="layout"></select></label>
<span id="pc-axes"><label>x <select id="pcx"></select></label> <label>y <select id="pcy"></select></label></span>
<label>colour <select id="colour"></select></label>
<label><input type="checkbox" id="show-null" checked> null map</label>
<span id="status">loading...</span></header>
<main>
<div id="maps"><div class="map" id="map-data">{div_map}</div><div class="map" id="map-null">{div_null}</div></div>
<aside>
<section id="legend"></section>
<section id="hover"><h2>hover</h2><div class="thumbs"><figure><div id="hover-img"></div>
<figcaption>image</figcaption></figure><figure><div id="hover-rec"></div>
<figcaption>reconstruction</figcaption></figure></div><dl id="hover-info"></dl></section>
<section id="clicked"><h2>click</h2><p class="hint">click a point: its nearest neighbours in z; shift-click a second
point: the decoded path between them</p><div id="neighbours" class="strip"></div><div id="path" class="strip"></div>
</section>
<section id="selection"><h2>selection</h2><p class="hint">box or lasso select (toolbar)</p><div id="selection-info"></div>
</section>
</aside></main>
<footer id="missing"></footer>
<script type="application/json" id="bokeh-doc">{doc}</script>
<script src="explore.js"></script>
</body></html>
"""


def _decoder(run: Path, device: str):
    """(model, device, precision) of the checkpoint that encoded the latents, or None when there is none to trust:
    no checkpoint, or latents brought in with import-latents (another model's z; this decoder would mislead)."""
    if "checkpoint_sha256" not in open_latents(run).attrs:
        logger.warning("%s holds latents zspace encode did not write (import-latents?): the page has no "
                       "reconstructions, decoded paths or mean faces", latents_path(run))
        return None
    try:
        return load_model(run, device=device)
    except FileNotFoundError as exc:
        logger.warning("%s: the page has no reconstructions, decoded paths or mean faces", exc)
        return None


def explore(run_dir: str | os.PathLike, config: ExploreConfig | None = None, progress: bool = True) -> dict:
    """Write RUN/explore/ (index.html and its data) for the run's points; returns what went in and its sizes.

    The new page is built in RUN/explore.partial and swapped in whole: a failed or interrupted build leaves
    the old page as it was."""
    cfg = config or ExploreConfig()
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist")
    version = bokeh_version()  # before any work: one line saying what to install
    t0 = time.perf_counter()
    tmp = run / "explore.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        info = _build(run, tmp, cfg, version, progress)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info["seconds"] = round(time.perf_counter() - t0, 2)
    write_json_atomic(tmp / "explore.json", info)
    out = run / "explore"
    swap_in(tmp, out)
    return {**info, "page": str(out / "index.html")}


def _build(run: Path, tmp: Path, cfg: ExploreConfig, version: str, progress: bool) -> dict:
    (tmp / "bokeh").mkdir(parents=True)
    decoder = _decoder(run, cfg.device)
    pts = gather(run, cfg)
    size = decoder[0].config.size if decoder else None
    if size is None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            size = int(open_cache(run)["images"].shape[1])
    cfg = replace(cfg, thumb=min(cfg.thumb, size or cfg.thumb))  # never larger than the images
    thumbs = write_thumbnails(tmp, run, pts, cfg, decoder, progress)
    pts.meta.update({"draw": cfg.draw, "chunk": cfg.chunk, "thumb": cfg.thumb, "atlas": cfg.atlas, "images": thumbs["images"],
                     "reconstructions": decoder is not None})
    sizes = {"data.js": write_data(tmp, pts), "z": write_latents(tmp, pts, cfg),
             **{f"thumbs/{k}": v for k, v in thumbs["bytes"].items()}}
    sizes["decoder.js"] = write_decoder(tmp, decoder[0] if decoder else None)
    import bokeh  # its presence was checked by bokeh_version()

    static = Path(bokeh.__file__).parent / "server" / "static" / "js"
    for f in BOKEH_FILES:
        shutil.copy2(static / f, tmp / "bokeh" / f)
        sizes[f"bokeh/{f}"] = (tmp / "bokeh" / f).stat().st_size
    for f in OURS:
        shutil.copy2(ASSETS / f, tmp / f)
    doc, div_map, div_null = _bokeh_doc()
    title = f"zspace explore: {run.resolve().name}"
    write_text_atomic(tmp / "index.html", _html(title, doc, div_map, div_null))
    return {"n": pts.n, "n_latents": pts.meta["n_latents"], "all_points": pts.meta["all_points"],
            "layouts": sorted(pts.layouts), "colours": [c.name for c in pts.colours],
            "attributes": pts.attributes, "probes": int(len(pts.probes.get("depth", ()))),
            "thumb": cfg.thumb, "images": thumbs["images"], "decoder": decoder is not None, "bokeh": version,
            "bytes": sizes, "total_bytes": sum(sizes.values()), "missing": pts.meta.get("missing", []),
            "inputs": {"latents_key": latents_key(run)}, "config": json.loads(json.dumps(cfg.__dict__))}
