"""``zspace explore`` at the study's size: the page of every point of 202,599 synthetic faces, opened in Chromium.

The run is real except its model: a decoder trained for one epoch on 2,000 faces (the page's costs do not depend
on how good the model is), its checkpoint labelled with the bench cache's fingerprint so that ``zspace encode``
takes it. Then encode, structure and tsne run as in ``zspace run``: the map is openTSNE's map of every latent.
A smaller page (``ExploreConfig.n``) is a seeded sample of that map.

In the browser (Debian chromium, headless; no GPU here: WebGL through SwiftShader and the page composited in
software, as Chrome does on a machine without a GPU) each page is timed from navigation to ready (every column
decoded and drawn once), then a continuous zoom of 4 s (frames a second: BokehJS's repaints of the map), the
picture at rest after it, a colour switch, and a hover (in the page: pointer event to the panel showing the point).
Each page is opened as it opens by default (where WebGL runs in software, as here, the page draws on the 2D canvas)
and with ``?backend=webgl`` (the backend a browser with a GPU gets, here in software); the 202,599-point page also
with ``?draw=0`` (every point drawn at every zoom) on either backend. There is no baseline to run: TensorBoard's
Embedding Projector, the tool people use, needs a server and caps its map at 100,000 points.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.browser import CHROMEDRIVER, CHROMIUM, chromium
from bench.measure import measure
from bench.results import Row



def build_run(workdir: Path, n: int) -> Path:
    """A finished run of ``n`` synthetic 96 px faces up to tsne (all points on the map), for explore."""
    import torch

    from engine.analysis.config import StatsConfig, StructureConfig, TSNEConfig
    from engine.analysis.stats import compute_stats
    from engine.analysis.structure import compute_structure
    from engine.analysis.tsne import compute_tsne
    from engine.data.imagecache import open_cache, prepare
    from engine.model.checkpoint import read_checkpoint
    from engine.model.config import ModelConfig, TrainConfig
    from engine.model.encode import encode
    from engine.model.train import train

    side, run = workdir / "explore_model", workdir / "explore_run"
    prepare("synthetic:2000", side, size=96, progress=False)
    train(side, TrainConfig(epochs=1, device="cpu"), ModelConfig(), progress=False)
    prepare(f"synthetic:{n}", run, size=96, progress=False)
    (run / "checkpoints").mkdir()
    ckpt = read_checkpoint(side / "checkpoints" / "best.pt")
    ckpt["config"].setdefault("data", {})["cache_fingerprint"] = open_cache(run).attrs["fingerprint"]
    torch.save(ckpt, run / "checkpoints" / "best.pt")
    encode(run, device="cpu", progress=False)
    compute_stats(run, StatsConfig(), progress=False)
    compute_structure(run, StructureConfig(device="cpu"), progress=False)
    compute_tsne(run, TSNEConfig(n=n), progress=False)
    return run


def _driver():
    return chromium(webgl=True, offline=True)


# a frame is timed from the change to the second animation frame after BokehJS repainted: the first is the one
# that shows the new picture, so this waits until it is on screen (on this machine WebGL is SwiftShader, in software)
FRAME_JS = """
const done = arguments[arguments.length - 1];
const doc = Bokeh.documents[0], m = doc.get_model_by_name('map'), pv = Bokeh.index.find_one(m);
const change = {
  colour: (k) => zspace.setColour(k % 2 ? 'radius' : 'mahalanobis'),
}[arguments[0]];
const times = []; let k = 0;
function step() {
  const t0 = performance.now();
  const once = () => { pv.repainted.disconnect(once);
    requestAnimationFrame(() => requestAnimationFrame(() => { times.push(performance.now() - t0); k++;
      if (k < arguments_n) step(); else done(times); })); };
  pv.repainted.connect(once);
  change(k);
}
const arguments_n = arguments[1];
step();
"""

# a continuous zoom: at every animation frame the ranges are set to the view at that moment of a zoom that goes
# from the whole map to 60 % of it and back each second (so a slow frame lands on a view like a fast one's), for
# D ms and at least MIN repaints. Counted from the first change: BokehJS's repaints of the map (frames a second: what
# reaches the screen) and the spacing of the page's animation frames (median, ms: how busy the page's thread is;
# BokehJS paints at most once per animation frame, and may skip some)
GESTURE_JS = """
const done = arguments[arguments.length - 1], D = arguments[0], MIN = arguments[1];
const m = Bokeh.documents[0].get_model_by_name('map'), pv = Bokeh.index.find_one(m), xr = m.x_range, yr = m.y_range;
const cx = (xr.start + xr.end) / 2, cy = (yr.start + yr.end) / 2, hx = (xr.end - xr.start) / 2, hy = (yr.end - yr.start) / 2;
let paints = 0, t0 = null, prev = null; const gaps = [], count = () => paints++;
function tick(now) {
  if (t0 === null) { t0 = now; pv.repainted.connect(count); }
  else gaps.push(now - prev);
  prev = now;
  const t = now - t0;
  if (t > D && paints >= MIN) {
    pv.repainted.disconnect(count); gaps.sort((a, b) => a - b);
    done({fps: paints * 1000 / t, paints, frame_ms: gaps[gaps.length >> 1]}); return; }
  const u = (t / 1000) % 1, s = 1 - 0.4 * (1 - Math.abs(2 * u - 1));
  xr.setv({start: cx - s * hx, end: cx + s * hx});
  yr.setv({start: cy - s * hy, end: cy + s * hy});
  requestAnimationFrame(tick);
}
requestAnimationFrame(tick);
"""

# after a gesture: from the last change of the ranges to the whole sample on screen (the page waits
# zspace.lod.settle_ms for the ranges to rest, then hands Bokeh the sample, which is then painted: on the data map,
# or on the null map alone where only its sample changes)
SETTLE_JS = """
const done = arguments[arguments.length - 1];
const doc = Bokeh.documents[0], m = doc.get_model_by_name('map'), xr = m.x_range;
const views = ['map', 'null_map'].map((name) => Bokeh.index.find_one(doc.get_model_by_name(name)));
const t0 = performance.now();
const painted = () => { if (!zspace.settled()) return; for (const v of views) v.repainted.disconnect(painted);
  requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0))); };
for (const v of views) v.repainted.connect(painted);
const w = 0.01 * (xr.end - xr.start);
xr.setv({start: xr.start + w, end: xr.end + w});
"""


def _settled(d, timeout: float = 60) -> None:
    """Wait until the page has drawn its whole sample after the last change of the ranges."""
    t0 = time.perf_counter()
    while not d.execute_script("return zspace.settled()"):
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"the page did not settle in {timeout} s")
        time.sleep(0.05)


HOVER_JS = """
window.__hover = []; window.addEventListener('pointermove', () => { window.__moved = performance.now(); }, true);
new MutationObserver(() => { if (window.__moved) window.__hover.push(performance.now() - window.__moved); window.__moved = 0; })
  .observe(document.getElementById('hover-info'), {childList: true, subtree: true});
"""


def _browser_mb(driver) -> float:
    """Resident memory of every process of the browser (chromedriver's children), MB."""
    import psutil

    procs = psutil.Process(driver.service.process.pid).children(recursive=True)
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 1e6


def browse(page: Path, query: str = "") -> dict:
    """Load ``page`` (with ``query``) in headless Chromium: seconds to ready, points and drawn points, frames a second
    of a continuous zoom, the picture at rest after a change and a colour switch (ms), hover (ms), the browser's
    resident memory after them (MB)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    d = _driver()
    try:
        d.set_script_timeout(120)
        t0 = time.perf_counter()
        d.get(page.resolve().as_uri() + query)
        while not d.execute_script("return !!(window.zspace && window.zspace.ready)"):
            if time.perf_counter() - t0 > 300:
                raise RuntimeError(f"{page} not ready after 300 s")
            time.sleep(0.02)
        ready = time.perf_counter() - t0
        n = d.execute_script("return zspace.n")
        drawn = d.execute_script("return Bokeh.documents[0].get_model_by_name('points_source').data.x.length")
        webgl = d.execute_script("return zspace.state.webgl")
        backend = d.execute_script("return zspace.state.backend")
        _settled(d)
        gesture = d.execute_async_script(GESTURE_JS, 4000, 5)
        _settled(d)
        settle = d.execute_async_script(SETTLE_JS)
        _settled(d)
        colour = d.execute_async_script(FRAME_JS, "colour", 2)
        d.execute_script(HOVER_JS)
        for i in d.execute_script("const n = zspace.state.x.length; return [0, 1, 2].map(k => Math.floor((k + 0.5) * n / 3))"):
            p = d.execute_script(f"return zspace.screenOf({i})")
            ab = ActionBuilder(d)
            ab.pointer_action.move_to_location(int(round(p["x"])), int(round(p["y"])))
            ab.perform()
            t1 = time.perf_counter()
            while len(d.execute_script("return window.__hover")) < 1 and time.perf_counter() - t1 < 60:
                time.sleep(0.05)
        hover = d.execute_script("return window.__hover")
        return {"ready_s": ready, "n": n, "drawn": drawn, "webgl": webgl, "backend": backend, **gesture,
                "settle_ms": settle,
                "lod": d.execute_script("return zspace.lod"),
                "colour_ms": statistics.median(colour), "hover_ms": statistics.median(hover) if hover else float("nan"),
                "hovers": len(hover), "null_shown": d.execute_script("return document.getElementById('show-null').checked"),
                "browser_mb": _browser_mb(d)}
    finally:
        d.quit()


def _lod(b: dict) -> tuple[str, str]:
    """What the page draws while the ranges move and after (``zspace.lod``; a limit of Infinity comes back as
    None), as two phrases for the row's notes."""
    lod = b["lod"]
    if lod["limit"] is None or b["n"] <= lod["gesture"]:
        return "; every point drawn", "every point redrawn"
    at_rest = "every point" if b["n"] <= lod["limit"] else f"{lod['limit']:,}"
    return (f"; at most {lod['gesture']:,} drawn while they move, {at_rest} at rest",
            f"{'every point' if b['n'] <= lod['limit'] else 'the whole sample'} on screen "
            f"(its {lod['settle_ms']} ms rest included)")


def stage_explore(ctx) -> list[Row]:
    from engine.explore.config import ExploreConfig
    from engine.explore.page import explore

    sizes = ctx["sizes"]
    big = sizes.explore_rows
    run = build_run(ctx["workdir"], big)
    rows = []
    for n in (sizes.explore_small_rows, big):
        info = {}

        def make():
            info.update(explore(run, ExploreConfig(n=None if n == big else n, device="cpu"), progress=False))

        t, peak = measure(make, 1)
        mb = info["total_bytes"] / 1e6
        parts = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in info["bytes"].items())
        rows.append(Row("explore_page", f"{n:,} points", t, float("nan"),
                        "zspace explore: columns, float16 latents, thumbnail atlases (images and decoded "
                        "reconstructions, 48 px JPEG), BokehJS", "-", f"{n / t:,.0f} points/s", peak_mb=peak,
                        notes=f"{mb:.1f} MB in all ({parts} MB); no baseline: TensorBoard's projector needs a "
                              f"server and caps its map at 100,000 points",
                        extra={"bytes": info["total_bytes"]}))
        if CHROMIUM is None or CHROMEDRIVER is None:
            rows[-1].notes += "; no chromium + chromedriver here, so the page was not opened"
            continue
        queries = ("", "?backend=webgl") + (("?draw=0", "?draw=0&backend=webgl") if n == big else ())
        for query in queries:
            b = browse(run / "explore" / "index.html", query)
            moving, rest = _lod(b)
            if b["n"] != n:
                raise RuntimeError(f"the page has {b['n']} points, expected {n}")
            drawer = ("WebGL in software (SwiftShader: no GPU here)" if b["webgl"] else
                      f"2D canvas ({b['backend']['why']})")
            rows.append(Row("explore_browser", f"{n:,} points, {b['drawn']:,} drawn" + (f" ({query})" if query else ""),
                            b["ready_s"], float("nan"),
                            f"the page{query} in headless Chromium: load to ready (every column decoded, drawn once)",
                            "-", f"{b['fps']:.1f} frames/s zooming", peak_mb=b["browser_mb"], notes=(
                                f"{drawer}"
                                f"{', null map beside' if b['null_shown'] else ', null map hidden (its checkbox draws it)'}; "
                                f"a continuous zoom (the ranges change at every animation frame for 4 s or 5 frames) drawn at "
                                f"{b['fps']:.1f} frames/s (animation frames every {b['frame_ms']:.0f} ms, median{moving}), {rest} "
                                f"{b['settle_ms']:.0f} ms after the last change, a colour switch "
                                f"{b['colour_ms']:.0f} ms, hover to the point's id and thumbnail {b['hover_ms']:.1f} ms "
                                f"(in the page, pointer event to panel; median of {b['hovers']}); memory: the browser's "
                                f"resident set after these (all its processes); no baseline (as above)"),
                            extra=b))
    return rows
